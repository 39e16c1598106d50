"""Start and stop the project's real processes (web, worker) and wait on conditions.

Used by the tests and by the benchmarks: every process runs in its own process group, is
stopped by its pid, and writes its output to a log file.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import requests

from devtools.localredis import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", diagnose=None):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds,
    with ``diagnose()``'s account of what is missing when one is given."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f": {diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(0.02)


class Service:
    """A real process of the project (web, worker), started and stopped by its pid.

    It runs in its own process group so that stop() and kill() reach its children too (the
    worker's pool, gunicorn's workers). Its output goes to ``log_path``.
    """

    started: ClassVar[list["Service"]] = []  # every one ever started, to check none is left

    def __init__(
        self, argv: list[str], env: dict, log_path: Path, ready: Callable[["Service"], bool]
    ):
        self.argv, self.env, self.log_path, self.ready = argv, env, log_path, ready
        self.process: subprocess.Popen | None = None

    @classmethod
    def still_running(cls) -> list["Service"]:
        return [s for s in cls.started if s.process and s.process.poll() is None]

    def start(self, timeout: float = 30.0) -> "Service":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        Service.started.append(self)
        try:
            wait_for(
                lambda: self.process.poll() is not None or self.ready(self),
                timeout,
                f"{self.argv[:4]} to be ready (log: {self.log_path})",
            )
        except AssertionError:
            self.kill()  # never ready: not left running behind the failed test
            raise
        assert self.process.poll() is None, self.log()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """SIGTERM the leader, as a supervisor would: a Celery worker finishes and acknowledges
        what it runs, gunicorn drains its workers. SIGKILL goes to the whole group at once.
        Whatever is left in the group afterwards (a pool child) is killed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no acknowledgements."""
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "project", *args, "--loglevel=INFO"]


def start_worker(
    env: dict,
    log_path: Path,
    name: str = "w1",
    concurrency: int = 2,
    *extra: str,
    via: Sequence[str] = (),
) -> Service:
    """`celery -A project worker` on every effect queue; ``via`` prefixes the command (a test
    host's ``ip netns exec``, which runs it in place: its pid stays the worker's)."""
    argv = celery(
        "worker", "--without-mingle", "--without-gossip", f"--concurrency={concurrency}",
        "-Q", "emails,files,records", "-n", f"{name}-{os.getpid()}@%h", *extra,
    )  # fmt: skip
    argv = [*via, *argv]
    return Service(argv, env, log_path, lambda s: b" ready." in s.log_path.read_bytes()).start()


def start_web(env: dict, log_path: Path) -> Service:
    """`gunicorn project.wsgi` on a free loopback port; ``service.url`` is its address."""
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", "2", "--access-logfile", "-",
    ]  # fmt: skip
    service = Service(argv, env, log_path, lambda s: answers(f"http://127.0.0.1:{port}/healthz"))
    service.url = f"http://127.0.0.1:{port}"
    return service.start()


def answers(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
