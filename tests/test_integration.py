"""The whole path over real HTTP: the web app (pytest-django's live server), a real Celery worker
process on a real Redis, and a real SMTP sink on loopback. No eager mode: every effect crosses the
broker and runs in the worker process."""

import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from devtools.processes import ROOT, start_worker, wait_for
from notifications import services
from offload.models import Effect
from tests.client import ApiClient, upload_file
from tests.factories import PASSWORD, WELCOME_TASK, make_document

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ENDED = ("done", "skipped")


def record_failed_login_effects(username: str) -> list[Effect]:
    """The signed-out caller cannot list them over the API; read the ledger."""
    return list(Effect.objects.filter(task="record_failed_login", user__username=username))


@pytest.fixture
def browser(live_server, worker):
    return ApiClient(live_server.url, user_agent="IntegrationTest/1.0")


def test_sign_up_over_http_delivers_the_welcome_email(browser, smtp_sink):
    response = browser.sign_up("ada")
    assert response.status_code == 201, response.text
    [message] = wait_for(lambda: smtp_sink.to("ada@example.com"), what="the welcome email")
    assert message["Subject"] == "Welcome aboard"
    assert "Hello ada" in message.get_body(("plain",)).get_content()
    assert "Hello ada" in message.get_body(("html",)).get_content()

    assert browser.sign_in("ada").status_code == 200
    welcome = wait_for(lambda: [e for e in browser.effects(WELCOME_TASK) if e["status"] == "done"])
    assert welcome[0]["attempts"] == 1
    assert response.json()["id"]


def test_sign_in_is_recorded_and_a_new_browser_is_emailed(browser, live_server, smtp_sink):
    browser.sign_up("lin")
    assert browser.sign_in("lin").status_code == 200
    profile = wait_for(
        lambda: (p := browser.get("/api/me").json()["profile"])["login_count"] == 1 and p,
        what="the sign-in to be recorded",
    )
    assert profile["last_login_ip"] == "127.0.0.1"
    assert profile["last_login_at"]

    other = ApiClient(live_server.url, user_agent="AnotherBrowser/2.0")
    assert other.sign_in("lin").status_code == 200
    [alert] = wait_for(
        lambda: [m for m in smtp_sink.to("lin@example.com") if "New sign-in" in m["Subject"]],
        what="the new sign-in email",
    )
    assert "AnotherBrowser/2.0" in alert.get_body(("plain",)).get_content()
    wait_for(lambda: other.get("/api/me").json()["profile"]["login_count"] == 2)


def test_repeated_wrong_passwords_alert_the_owner_once(browser, smtp_sink):
    browser.sign_up("mo")
    statuses = [browser.sign_in("mo", "wrong password").status_code for _ in range(6)]
    assert statuses == [401] * 4 + [429] * 2  # locked out at the 5th (django-axes)
    [alert] = wait_for(
        lambda: [m for m in smtp_sink.to("mo@example.com") if "Failed sign-in" in m["Subject"]],
        what="the failed sign-in alert",
    )
    assert "failed attempts" in alert.get_body(("plain",)).get_content()
    assert browser.sign_in("mo").status_code == 429, "the right password waits out the lockout"
    wait_for(lambda: len(record_failed_login_effects("mo")) == 7, what="every failure recorded")
    wait_for(lambda: all(e.status == "done" for e in record_failed_login_effects("mo")))
    alerts = [m for m in smtp_sink.to("mo@example.com") if "Failed sign-in" in m["Subject"]]
    assert len(alerts) == 1


def test_upload_replace_delete_cleans_files_and_keeps_counters_right(browser, media_root):
    browser.sign_up("sam")
    browser.sign_in("sam")

    response = browser.upload(
        "/api/documents", {"title": "Plan", "file": upload_file(b"v1 plan", "plan.txt")}
    )
    assert response.status_code == 201, response.text
    first = response.json()
    assert (media_root / first["file"]).exists()
    wait_for(lambda: browser.get("/api/me").json()["profile"]["storage_bytes"] == 7)

    response = browser.upload(
        f"/api/documents/{first['id']}/file", {"file": upload_file(b"v2", "plan.txt")}
    )
    assert response.status_code == 200
    replaced = response.json()
    wait_for(lambda: not (media_root / first["file"]).exists(), what="the old file to be deleted")
    assert (media_root / replaced["file"]).read_bytes() == b"v2"
    wait_for(lambda: browser.get("/api/me").json()["profile"]["storage_bytes"] == 2)

    browser.upload("/api/documents", {"title": "Other", "file": upload_file(b"12345", "o.txt")})
    wait_for(lambda: browser.get("/api/me").json()["profile"]["document_count"] == 2)

    assert browser.delete(f"/api/documents/{first['id']}").status_code == 204
    wait_for(lambda: not (media_root / replaced["file"]).exists(), what="the deleted file to go")
    profile = wait_for(
        lambda: (p := browser.get("/api/me").json()["profile"])["document_count"] == 1 and p
    )
    assert profile["storage_bytes"] == 5
    wait_for(browser.all_done, what="every effect to finish")


def test_sharing_emails_the_recipient_a_link_that_downloads_the_file(
    browser, live_server, smtp_sink
):
    browser.sign_up("kim")
    browser.sign_in("kim")
    document = browser.upload(
        "/api/documents", {"title": "Recipe", "file": upload_file(b"salt", "r.txt")}
    ).json()
    response = browser.post(
        f"/api/documents/{document['id']}/share", {"email": "friend@example.org"}
    )
    assert response.status_code == 202
    [message] = wait_for(lambda: smtp_sink.to("friend@example.org"), what="the share email")
    assert message["Subject"] == "kim shared “Recipe” with you"
    [link] = [w for w in message.get_body(("plain",)).get_content().split() if "/shared/" in w]
    # The recipient has no account: the signed link alone downloads the file.
    download = requests.get(live_server.url + urlsplit(link).path, timeout=10)
    assert download.status_code == 200 and download.content == b"salt"
    assert download.headers["Content-Disposition"] == 'attachment; filename="r.txt"'


def test_an_email_change_tells_the_old_address_and_confirms_the_new_one(browser, smtp_sink):
    browser.sign_up("ed", email="ed@old.example")
    browser.sign_in("ed")
    response = browser.patch("/api/me", {"email": "ed@new.example"})
    assert response.status_code == 200, response.text

    [notice] = wait_for(
        lambda: [m for m in smtp_sink.to("ed@old.example") if "changed" in m["Subject"]],
        what="the notice to the old address",
    )
    assert "ed@new.example" in notice.get_body(("plain",)).get_content()
    [confirmation] = wait_for(lambda: smtp_sink.to("ed@new.example"), what="the confirmation")
    assert confirmation["Subject"] == "This is now your address"
    wait_for(browser.all_done, what="every effect to finish")


def test_an_account_closed_right_after_an_address_change_still_tells_the_old_address(
    browser, smtp_sink
):
    """The takeover pattern: change the address, then close the account, before any worker ran.
    The notice needs no row of the account, so it still reaches the owner."""
    browser.sign_up("fay", email="fay@old.example")
    browser.sign_in("fay")
    assert browser.patch("/api/me", {"email": "fay@new.example"}).status_code == 200
    assert browser.delete("/api/me", {"password": PASSWORD}).status_code == 204
    wait_for(
        lambda: [m for m in smtp_sink.to("fay@old.example") if "changed" in m["Subject"]],
        what="the notice to the old address",
    )
    wait_for(
        lambda: [m for m in smtp_sink.to("fay@new.example") if "closed" in m["Subject"]],
        what="the goodbye email",
    )


def test_closing_an_account_says_goodbye_and_removes_each_file_once(
    browser, live_server, smtp_sink, media_root
):
    other = ApiClient(live_server.url)
    other.sign_up("stays")
    other.sign_in("stays")
    browser.sign_up("cy")
    browser.sign_in("cy")
    files = [
        browser.upload("/api/documents", {"title": t, "file": upload_file(b"x", f"{t}.txt")})
        for t in ("a", "b")
    ]
    stored = [media_root / f.json()["file"] for f in files]
    assert all(path.exists() for path in stored)

    # At once: the uploads' recounts and the welcome email may still be waiting. They run to
    # an end with the account gone.
    assert browser.delete("/api/me", {"password": PASSWORD}).status_code == 204

    [goodbye] = wait_for(
        lambda: [m for m in smtp_sink.to("cy@example.com") if "closed" in m["Subject"]],
        what="the goodbye email",
    )
    assert "Goodbye cy" in goodbye.get_body(("plain",)).get_content()
    wait_for(lambda: not any(path.exists() for path in stored), what="the files to be deleted")
    everything = lambda: list(Effect.objects.exclude(user__username="stays"))  # noqa: E731
    wait_for(lambda: all(e.status in ENDED for e in everything()), what="every effect to end")
    deletions = [e for e in everything() if e.task == "delete_stored_file"]
    assert sorted(e.args["name"] for e in deletions) == sorted(f.json()["file"] for f in files)
    assert all(e.status == "done" and e.attempts == 1 and e.user_id is None for e in deletions)
    assert {e["task"] for e in other.effects()} == {WELCOME_TASK, "record_login"}


def test_signing_out_records_when_the_session_ended(browser, live_server):
    browser.sign_up("di")
    assert browser.sign_in("di").status_code == 200
    wait_for(lambda: browser.get("/api/me").json()["profile"]["login_count"] == 1)
    assert browser.delete("/api/session").status_code == 204

    again = ApiClient(live_server.url)
    again.sign_in("di")
    logins = wait_for(
        lambda: (ls := again.get("/api/me/logins").json()) and ls[-1]["ended_at"] and ls,
        what="the first sign-in's end to be recorded",
    )
    assert logins[-1]["ended_at"] >= logins[-1]["at"]
    wait_for(again.all_done, what="every effect to finish")


def test_a_share_whose_document_is_deleted_first_ends_skipped_and_sends_nothing(browser, smtp_sink):
    """The share-then-delete race, made certain: the document is deleted before the worker gets
    the share email (here in the same transaction; under load, ~70 ms later is enough). The
    effect ends as skipped, with the reason; the recipient gets nothing."""
    browser.sign_up("lee")
    browser.sign_in("lee")
    owner = get_user_model().objects.get(username="lee")
    document = make_document(owner, name="gone.txt")
    with transaction.atomic():
        services.share_document(document, "friend@example.net", owner)
        services.delete_document(document)

    [share] = wait_for(
        lambda: [e for e in browser.effects("send_share_email") if e["status"] in ENDED],
        what="the share email effect to end",
    )
    assert share["status"] == "skipped" and share["attempts"] == 1
    reason = Effect.objects.get(pk=share["id"]).reason
    assert reason == "the document was deleted before the email was sent"
    wait_for(lambda: all(e["status"] in ENDED for e in browser.effects()), what="the rest")
    assert smtp_sink.to("friend@example.net") == []


def test_a_forgotten_password_is_reset_through_the_emailed_link(browser, live_server, smtp_sink):
    browser.sign_up("ria")
    web = requests.Session()

    def post_form(path: str, data: dict) -> requests.Response:
        page = web.get(live_server.url + path, timeout=10)
        token = web.cookies["csrftoken"]
        return web.post(page.url, {**data, "csrfmiddlewaretoken": token}, timeout=10)

    assert post_form("/password/reset/", {"email": "ria@example.com"}).url.endswith("/sent/")
    [message] = wait_for(
        lambda: [m for m in smtp_sink.to("ria@example.com") if "new password" in m["Subject"]],
        what="the reset email",
    )
    body = message.get_body(("plain",)).get_content()
    [link] = [word for word in body.split() if "/password/reset/" in word]

    new = "a brand new harbour password"
    done = post_form(
        link.removeprefix(settings.SITE_URL), {"new_password1": new, "new_password2": new}
    )
    assert done.url.endswith("/password/reset/done/"), done.url
    assert ApiClient(live_server.url).sign_in("ria", new).status_code == 200
    assert ApiClient(live_server.url).sign_in("ria").status_code == 401, "the old one is gone"
    [reset] = [e for e in Effect.objects.filter(task="send_password_reset_email")]
    assert reset.status == "done" and reset.args == {"user_id": reset.user_id}


def test_a_command_in_a_second_terminal_finds_the_redis_that_make_run_started(worker_env, tmp_path):
    """`make run` starts a private Redis on a free port and announces it (var/redis.url); a
    manage.py command started beside it, with no REDIS_URL, publishes there: the new admin's
    welcome email is done in seconds, not when the relay notices minutes later."""
    announced = tmp_path / "redis.url"
    env = {k: v for k, v in worker_env.items() if k != "REDIS_URL"}
    env |= {"REDIS_URL_FILE": str(announced), "DEBUG": "true"}
    make_run = [sys.executable, "-m", "devtools.localredis", "--announce", str(announced), "--"]
    worker = start_worker(env, tmp_path / "worker.log", via=make_run)
    try:
        assert announced.read_text().split()[0].startswith("redis://127.0.0.1:")
        created = subprocess.run(
            [sys.executable, "manage.py", "createsuperuser", "--noinput",
             "--username", "second-terminal", "--email", "second-terminal@example.com"],
            cwd=ROOT, env=env | {"DJANGO_SUPERUSER_PASSWORD": PASSWORD},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        welcome = Effect.objects.filter(task=WELCOME_TASK, user__username="second-terminal")
        wait_for(lambda: welcome.filter(status="done").exists(), timeout=10, what="the welcome")
    finally:
        worker.stop()
    assert worker.process.returncode == 0, "SIGTERM ends the command, then Redis, cleanly"
    assert not announced.exists(), "the announcement goes with the server"
