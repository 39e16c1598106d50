"""Shared fixtures: a real SMTP sink on loopback, a real Celery worker process, helpers.

Redis: `make test` starts a private server and sets REDIS_URL (project/localredis.py); a test
that must stop Redis starts its own with `LocalRedis`.
"""

import email
import email.policy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import requests
from aiosmtpd.controller import Controller
from django.conf import settings as django_settings
from django.db import connection

from project.localredis import free_port

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


class SmtpSink:
    """Collects every message delivered to it, as parsed email.message.EmailMessage objects."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.refuse: set[str] = set()  # recipients answered "451 try again later"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "451 4.3.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if address in m["X-Envelope-To"]]


@pytest.fixture(scope="session")
def smtp_sink():
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    sink.url = f"smtp://127.0.0.1:{controller.port}"
    yield sink
    controller.stop()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def media_root(settings, media_dir) -> Path:
    """Uploads of the test process and of the worker land in one temporary MEDIA_ROOT."""
    settings.MEDIA_ROOT = media_dir
    return media_dir


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2 costs ~260 ms a user here; the tests are about what happens after sign-up.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def database_url_for_workers() -> str:
    """The URL of the test database, for processes the tests start (workers)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Service:
    """A real process of the project (web, worker, beat), started and stopped by its pid.

    It runs in its own process group so that stop() and kill() reach its children too (the
    worker's pool, gunicorn's workers). Its output goes to ``log_path``.
    """

    def __init__(
        self, argv: list[str], env: dict, log_path: Path, ready: Callable[["Service"], bool]
    ):
        self.argv, self.env, self.log_path, self.ready = argv, env, log_path, ready
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Service":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(
            lambda: self.process.poll() is not None or self.ready(self),
            timeout,
            f"{self.argv[:4]} to be ready (log: {self.log_path})",
        )
        assert self.process.poll() is None, self.log()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no acknowledgements."""
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "project", *args, "--loglevel=INFO"]


def start_worker(env: dict, log_path: Path, name: str = "w1") -> Service:
    """`celery -A project worker` on every effect queue."""
    argv = celery(
        "worker", "--without-mingle", "--without-gossip", "--concurrency=2",
        "-Q", "emails,files,records", "-n", f"{name}-{os.getpid()}@%h",
    )  # fmt: skip
    return Service(argv, env, log_path, lambda s: b" ready." in s.log_path.read_bytes()).start()


def start_beat(env: dict, log_path: Path) -> Service:
    """`celery -A project beat`: schedules the relay."""
    argv = celery("beat", "--schedule", str(log_path.with_suffix(".schedule")))
    return Service(
        argv, env, log_path, lambda s: b"beat: Starting..." in s.log_path.read_bytes()
    ).start()


def start_web(env: dict, log_path: Path) -> Service:
    """`gunicorn project.wsgi` on a free loopback port; ``service.url`` is its address."""
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", "2", "--access-logfile", "-",
    ]  # fmt: skip
    service = Service(argv, env, log_path, lambda s: _answers(f"http://127.0.0.1:{port}/healthz"))
    service.url = f"http://127.0.0.1:{port}"
    return service.start()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, smtp_sink, media_dir) -> dict:
    """What a worker process needs to share the tests' database, media and SMTP sink."""
    with django_db_blocker.unblock():
        database_url = database_url_for_workers()
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": django_settings.CELERY_BROKER_URL,
        "EMAIL_URL": smtp_sink.url,
        "MEDIA_ROOT": str(media_dir),
        "EFFECT_RETRY_BACKOFF": "0",
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed process keeps its last log lines
    }


@pytest.fixture(scope="module")
def worker(worker_env, tmp_path_factory):
    """One real worker for a test module, consuming every effect queue."""
    service = start_worker(worker_env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield service
    service.stop()


@pytest.fixture
def broker() -> redis.Redis:
    """A client of the broker's Redis, to look at the queues."""
    return redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
