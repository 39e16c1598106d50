"""Abuse limits (notifications/limits.py), counted in the real Redis that the suite runs (the
"limits" cache on REDIS_URL).

Each test counts under a key prefix of its own (the counts live for the hour in a Redis the
whole suite shares), at a fixed moment in the middle of an hour's window, and sets small
limits: the property under test is the limit, not its size.
"""

import json
import logging
import os
import secrets
import subprocess
import sys

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.test import Client

from devtools.localredis import free_port
from devtools.processes import ROOT
from notifications import limits
from notifications.limits import limited
from offload.models import Effect
from tests.client import ApiClient, upload_file
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.django_db

HALF_PAST = 1_800_000_000 + 1800  # an hour's window that has 1,800 s to go
OFF = {"sign_up": {"ip": 0}, "share": {"user": 0, "ip": 0}}
OFF |= {"email_change": {"user": 0}, "password_reset": {"ip": 0}}


@pytest.fixture(autouse=True)
def counts_of_its_own(settings, monkeypatch):
    limits_cache = settings.CACHES["limits"] | {"KEY_PREFIX": secrets.token_hex(8)}
    settings.CACHES = settings.CACHES | {"limits": limits_cache}
    monkeypatch.setattr(limits.time, "time", lambda: HALF_PAST)


def set_limits(settings, **per_action):
    settings.RATE_LIMITS = OFF | per_action


def assert_limited(response, detail: str):
    assert response.status_code == 429, response.content
    assert response["Retry-After"] == "1800", "the seconds until the window ends"
    if response["Content-Type"] == "application/json":
        assert json.loads(response.content) == {
            "detail": f"{detail} Try again in 30 minutes.",
            "errors": {},
        }
    else:
        assert detail in response.content.decode()


def test_sign_ups_per_address_429_with_retry_after_and_only_successes_count(settings):
    set_limits(settings, sign_up={"ip": 2})
    client = ApiClient(remote_addr="203.0.113.7")
    assert client.sign_up("lim-a1").status_code == 201
    assert client.sign_up("lim-a1").status_code == 409, "taken: nothing sent, not counted"
    assert client.sign_up("lim-a2", email="not-an-address").status_code == 400, "not counted"
    assert client.sign_up("lim-a2").status_code == 201

    assert_limited(client.sign_up("lim-a3"), "Too many sign-ups from your address.")
    assert not Effect.objects.filter(user__username="lim-a3").exists()
    other = ApiClient(remote_addr="203.0.113.8")
    assert other.sign_up("lim-a4").status_code == 201, "another address has its own count"


def test_a_request_holds_its_place_while_its_view_runs_and_gives_it_back_if_refused(rf, settings):
    """So that concurrent requests cannot all pass the check before any of them counts, and a
    view that fails (here: raises) costs the client nothing."""
    set_limits(settings, sign_up={"ip": 1})
    during, fail = [], [True]

    @limited("sign_up")
    def view(request):
        if fail.pop():
            raise RuntimeError("the view failed")
        if not during:  # this request is still running when a second one arrives
            during.append(view(post()).status_code)
        return HttpResponse(status=201)

    def post():
        request = rf.post("/api/users", REMOTE_ADDR="203.0.113.9")
        request.user = AnonymousUser()
        return request

    with pytest.raises(RuntimeError):
        view(post())
    fail.append(False)
    assert view(post()).status_code == 201, "the failed request's place was given back"
    assert during == [429]


def test_an_ipv6_client_is_counted_by_its_slash_64(settings):
    set_limits(settings, sign_up={"ip": 1})
    assert ApiClient(remote_addr="2001:db8:1:2::1").sign_up("lim-v1").status_code == 201
    rotated = ApiClient(remote_addr="2001:db8:1:2:ffff::9")
    assert_limited(rotated.sign_up("lim-v2"), "Too many sign-ups from your address.")
    assert ApiClient(remote_addr="2001:db8:1:3::1").sign_up("lim-v3").status_code == 201


def test_the_sign_up_page_counts_with_the_api_and_answers_a_page(settings):
    set_limits(settings, sign_up={"ip": 1})
    assert ApiClient(remote_addr="203.0.113.10").sign_up("lim-p1").status_code == 201
    page = Client(REMOTE_ADDR="203.0.113.10")
    assert page.get("/signup/").status_code == 200, "only a POST counts"
    form = {"username": "lim-p2", "email": "lim-p2@example.com", "password": PASSWORD}
    refused = page.post("/signup/", form)
    assert_limited(refused, "Too many sign-ups from your address.")
    assert "text/html" in refused["Content-Type"]


def test_shares_per_user_and_per_address(settings):
    set_limits(settings, share={"user": 2, "ip": 3})
    alice, bob = ApiClient(remote_addr="203.0.113.11"), ApiClient(remote_addr="203.0.113.11")
    for name, client in (("lim-s1", alice), ("lim-s2", bob)):
        make_user(name)
        assert client.sign_in(name).status_code == 200
    document = alice.upload("/api/documents", {"title": "T", "file": upload_file()}).json()["id"]
    share = f"/api/documents/{document}/share"

    assert alice.post(share, {"email": "x@example.com"}).status_code == 202
    assert alice.post(share, {"email": "not-an-address"}).status_code == 400, "not counted"
    assert alice.post(share, {"email": "y@example.com"}).status_code == 202
    assert_limited(alice.post(share, {"email": "z@example.com"}), "Too many shares.")

    other = bob.upload("/api/documents", {"title": "U", "file": upload_file()}).json()["id"]
    other_share = f"/api/documents/{other}/share"
    assert bob.post(other_share, {"email": "x@example.com"}).status_code == 202, "bob's first"
    assert_limited(bob.post(other_share, {"email": "y@example.com"}), "Too many shares.")
    sent = Effect.objects.filter(task="send_share_email", user__username__startswith="lim-s")
    assert sent.count() == 3, "the address's third share was the last"


def test_address_changes_per_user(settings):
    set_limits(settings, email_change={"user": 1})
    make_user("lim-e1")
    client = ApiClient(remote_addr="203.0.113.12")
    assert client.sign_in("lim-e1").status_code == 200
    assert client.patch("/api/me", {"email": "bad"}).status_code == 400, "not counted"
    assert client.patch("/api/me", {"email": "lim-e1b@example.com"}).status_code == 200
    refused = client.patch("/api/me", {"email": "stranger@example.com"})
    assert_limited(refused, "Too many address changes.")


def test_password_reset_requests_per_address(settings):
    set_limits(settings, password_reset={"ip": 1})
    page = Client(REMOTE_ADDR="203.0.113.13")
    assert page.post("/password/reset/", {"email": "x@example.com"}).status_code == 302
    refused = page.post("/password/reset/", {"email": "x@example.com"})
    assert_limited(refused, "Too many password reset requests from your address.")


def test_the_limits_fail_open_when_their_redis_does_not_answer(settings, caplog):
    """Redis down must never cost a sign-up: the request goes through, with a warning."""
    set_limits(settings, sign_up={"ip": 1})
    unanswered = {"LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    settings.CACHES = settings.CACHES | {"limits": settings.CACHES["limits"] | unanswered}
    client = ApiClient(remote_addr="203.0.113.14")
    with caplog.at_level(logging.WARNING, logger="notifications.limits"):
        assert [client.sign_up(f"lim-f{i}").status_code for i in range(3)] == [201] * 3
    assert "abuse limits not checked" in caplog.text


@pytest.mark.parametrize(
    ("debug", "production"),
    [("false", True), ("true", False)],
)
def test_production_has_the_limits_on_and_development_off(debug, production):
    env = {
        **os.environ,
        "DEBUG": debug,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "EMAIL_URL": "smtp://mail.example.com:25",
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    env = {name: value for name, value in env.items() if "_PER_" not in name}
    script = "import json, django; django.setup(); from django.conf import settings; "
    script += "print(json.dumps(settings.RATE_LIMITS))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    expected = {
        "sign_up": {"ip": 20},
        "share": {"user": 50, "ip": 100},
        "email_change": {"user": 10},
        "password_reset": {"ip": 20},
    }
    assert json.loads(result.stdout) == (expected if production else OFF)
