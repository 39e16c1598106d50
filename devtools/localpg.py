"""A private PostgreSQL cluster for tests that need one on an address of their own (the
partition test's hosts), made with ``initdb`` and started with ``pg_ctl`` on a free port.

Runs as the ``postgres`` system user when started as root (PostgreSQL refuses to run as root).
Trust authentication: it is reachable only from this machine and its test namespaces.
"""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devtools.localredis import free_port


def bin_dir() -> Path | None:
    """The server programs' folder (Debian keeps them off PATH), or None when not installed."""
    if found := shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    return Path(versions[-1]).parent if versions else None


def _version(path: str) -> int:
    return int(Path(path).parent.parent.name)


def unavailable_reason() -> str:
    if bin_dir() is None:
        return "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is needed to run PostgreSQL as the postgres user"
    return ""


class LocalPostgres:
    """One cluster listening on ``addresses`` (127.0.0.1 and any other local address)."""

    def __init__(self, addresses: tuple[str, ...] = ("127.0.0.1",)):
        self.addresses = addresses
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="postgres-"))
        self.data = self.directory / "data"

    def url(self, address: str = "127.0.0.1") -> str:
        return f"postgres://postgres@{address}:{self.port}/postgres"

    def _as_owner(self, *argv: str) -> None:
        program = [str(bin_dir() / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            program = ["runuser", "-u", "postgres", "--", *program]
        subprocess.run(program, check=True, capture_output=True, cwd=self.directory)

    def start(self) -> "LocalPostgres":
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._as_owner("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres")
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server (again, after ``pause``, with its data)."""
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses='{','.join(self.addresses)}'"
            " -c fsync=off -c max_connections=200"  # a throwaway cluster: no durability needed
        )
        self._as_owner("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                       str(self.directory / "server.log"), "-w", "start")  # fmt: skip

    def pause(self) -> None:
        """Stop the server, keeping its data: clients are disconnected, new ones refused."""
        self._as_owner("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def stop(self) -> None:
        """Stop the postmaster (pg_ctl signals it by the pid in its pid file) and delete it."""
        if self.pid:
            self._as_owner("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
