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
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from aiosmtpd.controller import Controller
from django.conf import settings as django_settings
from django.db import connection

from project.localredis import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


class SmtpSink:
    """Collects every message delivered to it, as parsed email.message.EmailMessage objects."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []

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


class WorkerProcess:
    """A real `celery -A project worker` process, started and stopped by its pid."""

    def __init__(self, env: dict, log_path: Path, name: str, queues: str = "emails,files,records"):
        self.env, self.log_path, self.name, self.queues = env, log_path, name, queues
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "WorkerProcess":
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "project", "worker",
                "--loglevel=INFO", "--without-mingle", "--without-gossip",
                "--concurrency=2", "-Q", self.queues, "-n", self.name,
            ],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the pool children
        )  # fmt: skip
        log.close()
        wait_for(
            lambda: self.process.poll() is not None or b" ready." in self.log_path.read_bytes(),
            timeout,
            f"worker {self.name} to be ready (log: {self.log_path})",
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
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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
    }


@pytest.fixture(scope="module")
def worker(worker_env, tmp_path_factory):
    """One real worker for a test module, consuming every effect queue."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    process = WorkerProcess(worker_env, log_path, name=f"test-{os.getpid()}@%h").start()
    yield process
    process.stop()


@pytest.fixture
def broker() -> redis.Redis:
    """A client of the broker's Redis, to look at the queues."""
    return redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
