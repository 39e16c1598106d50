"""Shared fixtures: a real SMTP sink on loopback, a real Celery worker process, helpers.

Redis: `make test` starts a private server and sets REDIS_URL (devtools/localredis.py); a test
that must stop Redis starts its own with `LocalRedis`.
"""

import asyncio
import email
import email.policy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from aiosmtpd.controller import Controller
from django.conf import settings as django_settings
from django.db import connection

from devtools.localredis import free_port
from devtools.processes import ROOT, Service, start_worker
from tests.client import ApiClient


class SmtpSink:
    """Collects every message delivered to it, as parsed email.message.EmailMessage objects."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.refuse: set[str] = set()  # recipients answered "451 try again later"
        self.refuse_once: set[str] = set()  # the same, for their next delivery only
        self.delay = 0.0  # seconds before accepting a message, as a real server takes
        self.delays: dict[str, float] = {}  # or this long for these recipients

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if delay := self.delays.get(address):  # a slow server: slow at each step
            await asyncio.sleep(delay)
        if address in self.refuse or address in self.refuse_once:
            self.refuse_once.discard(address)
            return "451 4.3.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        delay = max([self.delay, *(self.delays.get(r, 0.0) for r in envelope.rcpt_tos)])
        if delay:
            await asyncio.sleep(delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if address in m["X-Envelope-To"].split(", ")]


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """Every process a test starts must be stopped by that test; the run fails otherwise."""
    yield
    leaked = Service.still_running()
    for service in leaked:
        service.kill()
    assert not leaked, f"processes left running: {[s.argv[2:5] for s in leaked]}"


@pytest.fixture
def figures(request, capsys):
    """Print a test's figures in the run's output and keep them in var/reports/faults.json."""

    def report(**values):
        with capsys.disabled():
            print(f"\n  {request.node.name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        path = ROOT / "var" / "reports" / "faults.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        known = json.loads(path.read_text()) if path.exists() else {}
        known[request.node.name] = values
        path.write_text(json.dumps(known, indent=2))

    return report


@pytest.fixture(scope="session")
def smtp_server():
    """The SMTP sink on loopback, for the whole session (workers are given its address)."""
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    sink.url = f"smtp://127.0.0.1:{controller.port}"
    yield sink
    controller.stop()


@pytest.fixture
def smtp_sink(smtp_server):
    """The sink, as a test made it behave (slow, refusing) only for that test."""
    yield smtp_server
    smtp_server.delay, smtp_server.delays, smtp_server.refuse = 0.0, {}, set()
    smtp_server.refuse_once = set()


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


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, smtp_server, media_dir) -> dict:
    """What a worker process needs to share the tests' database, media and SMTP sink."""
    with django_db_blocker.unblock():
        database_url = database_url_for_workers()
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": django_settings.CELERY_BROKER_URL,
        "EMAIL_URL": smtp_server.url,
        "MEDIA_ROOT": str(media_dir),
        # Real hashing costs ~260 ms a sign-up here; the tests are about what happens after it.
        "PASSWORD_HASHERS": "django.contrib.auth.hashers.MD5PasswordHasher",
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed process keeps its last log lines
    }


@pytest.fixture(scope="module")
def worker(worker_env, tmp_path_factory):
    """One real worker for a test module, consuming every effect queue."""
    service = start_worker(worker_env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield service
    service.stop()


@pytest.fixture
def api() -> ApiClient:
    """A browser-like client of the API in this process, CSRF enforced (tests/client.py)."""
    return ApiClient()


class Broker(redis.Redis):
    def effect_ids(self, queue: str) -> list[int]:
        """The effect ids waiting in ``queue``, oldest first (kombu pushes left, pops right)."""
        from offload.relay import effect_id_of  # once Django is set up

        return [effect_id_of(json.loads(raw)) for raw in reversed(self.lrange(queue, 0, -1))]


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A client of the broker's Redis, with the effect queues empty before and after the test
    (so a test sees only its own messages and leaves none for the next), and the relay's marker
    set: a broker that has kept its data."""
    from offload.relay import leader_key, marker_key  # once Django is set up

    client = Broker.from_url(django_settings.CELERY_BROKER_URL)
    # The queues, kombu's record of the messages workers hold unacknowledged, the relay lock.
    keys = (*django_settings.EFFECT_QUEUES, "unacked", "unacked_index", leader_key())
    client.delete(*keys)
    client.set(marker_key(), "1")
    yield client
    client.delete(*keys)
