"""Hostile input: brute force, spoofed addresses, secrets in stores, unsafe paths, header
injection, pickled messages, and the surfaces that need credentials. docs/SECURITY.md maps each
threat to its test here."""

import base64
import io
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests
from axes.models import AccessAttempt
from django.conf import settings
from django.core import mail
from django.core.exceptions import SuspiciousFileOperation
from django.core.management import call_command
from django.utils import timezone
from kombu import Connection, Exchange, Producer

from devtools.localredis import free_port
from devtools.processes import Service, celery, start_worker, wait_for
from notifications import effects, tasks
from offload.models import Effect
from tests.client import ApiClient
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.django_db


# --- brute force ---------------------------------------------------------------------------


def test_five_failures_lock_the_username_out_from_that_address(api, settings):
    user = make_user()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert api.sign_in(user.username, "wrong").status_code == 401
    assert api.sign_in(user.username, "wrong").status_code == 429  # the 5th locks
    locked = api.sign_in(user.username, PASSWORD)  # even the right password
    assert locked.status_code == 429
    assert "Try again in 15 minutes" in locked.json()["detail"]
    assert not Effect.objects.filter(task="record_login").exists()
    # Other accounts, and the same account from elsewhere, are not locked.
    other = make_user()
    assert api.sign_in(other.username, PASSWORD).status_code == 200
    assert ApiClient(remote_addr="10.9.9.9").sign_in(user.username, PASSWORD).status_code == 200


def test_rotating_x_forwarded_for_does_not_escape_the_lockout(api, settings):
    user = make_user()
    for i in range(settings.AXES_FAILURE_LIMIT + 3):
        api.sign_in(user.username, "wrong", headers={"X-Forwarded-For": f"198.51.100.{i}"})
    response = api.sign_in(user.username, PASSWORD, headers={"X-Forwarded-For": "203.0.113.99"})
    assert response.status_code == 429


def test_behind_a_configured_proxy_the_forwarded_address_is_the_client(api, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    user = make_user()
    proxied = {"X-Forwarded-For": "198.51.100.1"}
    for _ in range(settings.AXES_FAILURE_LIMIT):
        api.sign_in(user.username, "wrong", headers=proxied)
    assert api.sign_in(user.username, PASSWORD, headers=proxied).status_code == 429
    # A different client behind the same proxy is not locked out.
    other = {"X-Forwarded-For": "198.51.100.2"}
    assert api.sign_in(user.username, PASSWORD, headers=other).status_code == 200


def test_the_lockout_ends_when_the_cool_off_has_passed(api, settings):
    user = make_user()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        api.sign_in(user.username, "wrong")
    assert api.sign_in(user.username, PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert api.sign_in(user.username, PASSWORD).status_code == 200


def test_the_login_page_shows_a_clear_lockout_page(client, settings):
    user = make_user()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": user.username, "password": "wrong"})
    response = client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    # Failures are still recorded (offloaded); only the decision is synchronous.
    assert (
        Effect.objects.filter(task="record_failed_login").count() == settings.AXES_FAILURE_LIMIT + 1
    )


# --- files ---------------------------------------------------------------------------------


def test_a_symlinked_directory_inside_media_root_does_not_lead_outside(media_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (media_root / "sneaky").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SuspiciousFileOperation):
        effects.delete_stored_file("sneaky/precious.txt")
    assert (outside / "precious.txt").exists()


# --- email headers ---------------------------------------------------------------------------


def test_a_header_injection_reaching_a_task_is_a_dead_letter_not_a_retry():
    owner = make_user()
    document = effects.Document.objects.create(owner=owner, title="t", file="documents/x.txt")
    effect = tasks.send_share_email.offload(
        document_id=document.pk,
        recipient="victim@example.com\r\nBcc: everyone@example.com",
        shared_by_id=owner.pk,
    )
    assert tasks.send_share_email(effect.pk) == "dead"
    effect.refresh_from_db()
    assert effect.attempts == 1 and effect.status == "dead"
    assert mail.outbox == []


# --- surfaces --------------------------------------------------------------------------------


def test_the_admin_needs_a_staff_login(client):
    for path in ("/admin/", "/admin/workers/effect/"):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login/" in response.url
    client.force_login(make_user())  # not staff
    assert client.get("/admin/workers/effect/").status_code == 302


@pytest.mark.integration
def test_flower_refuses_missing_and_wrong_credentials(worker_env, tmp_path):
    port = free_port()
    env = {**worker_env, "FLOWER_BASIC_AUTH": "admin:flower-secret"}
    url = f"http://127.0.0.1:{port}"
    flower = Service(
        celery("flower", f"--port={port}", "--address=127.0.0.1"),
        env,
        tmp_path / "flower.log",
        lambda s: requests.get(url + "/healthcheck", timeout=1).ok if _listening(port) else False,
    ).start()
    try:
        assert requests.get(url + "/", timeout=5).status_code == 401
        assert requests.get(url + "/", auth=("admin", "nope"), timeout=5).status_code == 401
        assert requests.get(url + "/api/workers", auth=("x", "y"), timeout=5).status_code == 401
        assert (
            requests.get(url + "/", auth=("admin", "flower-secret"), timeout=5).status_code == 200
        )
    finally:
        flower.stop()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- the broker ------------------------------------------------------------------------------


class Payload:
    """Unpickling this runs a shell command: what an attacker with Redis access would send."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_pickled_message_is_refused_and_runs_nothing(worker_env, tmp_path, smtp_sink):
    sentinel = tmp_path / "pwned"
    worker = start_worker(worker_env, tmp_path / "worker.log")
    try:
        with Connection(settings.CELERY_BROKER_URL) as connection:
            Producer(connection.default_channel, serializer="pickle").publish(
                ((Payload(sentinel),), {}, {}),
                exchange=Exchange("records"),
                routing_key="records",
                headers={"task": "record_login", "id": "evil-1", "lang": "py", "argsrepr": "()"},
            )
        make_user("after-pickle")  # a legitimate effect behind it: proof the worker went on
        wait_for(lambda: smtp_sink.to("after-pickle@example.com"), what="the next effect")
        wait_for(lambda: b"untrusted content" in worker.log_path.read_bytes(), what="the refusal")
    finally:
        worker.stop()
    assert not sentinel.exists()


# --- credentials are never stored ------------------------------------------------------------

SENTINEL = "Sentinel-Pa55word-7f3a9c"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_password_never_reaches_a_store_a_log_or_a_message(
    live_server, worker, smtp_sink, caplog, capfd
):
    caplog.set_level("DEBUG")
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    written = io.BytesIO()  # every command that reaches Redis, via MONITOR
    stop = threading.Event()

    def monitor():
        with broker.monitor() as m:
            for command in m.listen():
                written.write(command["command"].encode(errors="replace"))
                if stop.is_set():
                    return

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    wait_for(lambda: broker.ping())

    assert ApiClient(live_server.url).sign_up("sentinel-owner", SENTINEL).status_code == 201
    victims = [make_user(f"victim-{i}") for i in range(5)]
    for i in range(50):
        if i % 2:  # the sentinel is the right password: 25 successful sign-ins
            assert ApiClient(live_server.url).sign_in("sentinel-owner", SENTINEL).status_code == 200
        else:  # typed into someone else's account, through the HTML form: 25 failures
            page = requests.Session()
            page.get(live_server.url + "/login/", timeout=10)
            page.post(
                live_server.url + "/login/",
                data={
                    "username": victims[i % 5].username,
                    "password": SENTINEL,
                    "csrfmiddlewaretoken": page.cookies["csrftoken"],
                },
                timeout=10,
            )
    wait_for(
        lambda: Effect.objects.count() > 50 and not Effect.objects.exclude(status="done").exists(),
        timeout=60,
        what="every effect to finish",
    )
    stop.set()
    broker.ping()  # wakes the monitor so it sees the stop
    watcher.join(timeout=5)

    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    logs = "\n".join(r.getMessage() for r in caplog.records) + "".join(capfd.readouterr())
    stores = {
        "database dump": dump.getvalue(),
        "test-process logs": logs,
        "worker log": worker.log(),
        "Redis commands (messages, results)": written.getvalue().decode(errors="replace"),
    }
    hits = {name: text.count(SENTINEL) for name, text in stores.items()}
    with capfd.disabled():
        print(
            "\n  sentinel search: 50 sign-ins; searched "
            + ", ".join(f"{name} ({len(text):,} chars)" for name, text in stores.items())
            + f"; hits {hits}"
        )
    assert len(stores["Redis commands (messages, results)"]) > 1000, "the monitor saw the traffic"
    assert (
        base64.b64encode(SENTINEL.encode()).decode()
        not in stores["Redis commands (messages, results)"]
    )
    assert hits == dict.fromkeys(stores, 0)
