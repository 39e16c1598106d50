"""Abuse limits (notifications/limits.py): sign-ups per address, shares per user and per address,
counted in the real Redis that the suite runs (the "limits" cache on REDIS_URL).

Each test signs up from addresses of its own (the counters live for the hour in a Redis the
whole suite shares), and sets small limits: the property under test is the limit, not its size.
"""

import json
import logging
import os
import secrets
import subprocess
import sys

import pytest
from django.test import Client

from devtools.localredis import free_port
from devtools.processes import ROOT
from offload.models import Effect
from tests.client import ApiClient, upload_file
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def address() -> str:
    """An address of this test's own (TEST-NET-3 and a random host part)."""
    return f"203.0.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def limits(settings, **per_action):
    settings.RATE_LIMITS = {
        "sign_up": {"ip": 0},
        "share": {"user": 0, "ip": 0},
    } | per_action


def assert_limited(response, detail: str):
    assert response.status_code == 429, response.content
    assert 0 < int(response["Retry-After"]) <= 3600
    if response["Content-Type"] == "application/json":
        body = json.loads(response.content)
        assert body["detail"].startswith(detail) and "Try again in" in body["detail"]
    else:
        assert detail in response.content.decode()


def test_sign_ups_per_address_429_with_retry_after_and_only_successes_count(settings, address):
    limits(settings, sign_up={"ip": 2})
    client = ApiClient(remote_addr=address)
    assert client.sign_up("lim-a1").status_code == 201
    assert client.sign_up("lim-a1").status_code == 409, "taken: nothing sent, not counted"
    assert client.sign_up("lim-a2", email="not-an-address").status_code == 400, "not counted"
    assert client.sign_up("lim-a2").status_code == 201

    refused = client.sign_up("lim-a3")
    assert_limited(refused, "Too many sign-ups from your address.")
    assert not Effect.objects.filter(user__username="lim-a3").exists()
    assert ApiClient(remote_addr=f"{address}1").sign_up("lim-a4").status_code == 201, (
        "another address has its own count"
    )


def test_the_sign_up_page_counts_with_the_api_and_answers_a_page(settings, address):
    limits(settings, sign_up={"ip": 1})
    assert ApiClient(remote_addr=address).sign_up("lim-p1").status_code == 201
    page = Client(REMOTE_ADDR=address)
    assert page.get("/signup/").status_code == 200, "only a POST counts"
    form = {"username": "lim-p2", "email": "lim-p2@example.com", "password": PASSWORD}
    refused = page.post("/signup/", form)
    assert_limited(refused, "Too many sign-ups from your address.")
    assert "text/html" in refused["Content-Type"]


def test_shares_per_user_and_per_address(settings, address):
    limits(settings, share={"user": 2, "ip": 3})
    alice, bob = ApiClient(remote_addr=address), ApiClient(remote_addr=address)
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


def test_the_limits_fail_open_when_their_redis_does_not_answer(settings, address, caplog):
    """Redis down must never cost a sign-up: the request goes through, with a warning."""
    limits(settings, sign_up={"ip": 1})
    settings.CACHES = settings.CACHES | {
        "limits": settings.CACHES["limits"] | {"LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }
    client = ApiClient(remote_addr=address)
    with caplog.at_level(logging.WARNING, logger="notifications.limits"):
        assert [client.sign_up(f"lim-f{i}").status_code for i in range(3)] == [201] * 3
    assert "abuse limits not checked" in caplog.text


@pytest.mark.parametrize(
    ("debug", "expected"),
    [
        ("false", {"sign_up": {"ip": 20}, "share": {"user": 50, "ip": 100}}),
        ("true", {"sign_up": {"ip": 0}, "share": {"user": 0, "ip": 0}}),
    ],
)
def test_production_has_the_limits_on_and_development_off(debug, expected):
    env = {
        **os.environ,
        "DEBUG": debug,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "EMAIL_URL": "smtp://mail.example.com:25",
    }
    for name in ("SIGN_UPS_PER_IP_PER_HOUR", "SHARES_PER_USER_PER_HOUR", "SHARES_PER_IP_PER_HOUR"):
        env.pop(name, None)
    script = "import json, django; django.setup(); from django.conf import settings; "
    script += "print(json.dumps(settings.RATE_LIMITS))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT, env=env | {"DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout) == expected
