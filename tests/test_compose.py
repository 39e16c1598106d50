"""`docker compose up` on a real Docker engine, and the user's journey against the stack from the
host. Run by `make compose-test` (devtools/dockerd.py: a private engine and stand-in base images
where no registry is reachable); skipped in `make test`.

The stack is the one users run: this repository's docker-compose.yml and Dockerfile, its .env
(written by `make env` when there is none). Torn down with its volumes at the end.
"""

import os
import subprocess
import sys
import time
from email import message_from_string
from email.policy import default
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from devtools.processes import ROOT, wait_for
from tests.client import ApiClient, upload_file
from tests.scrape import Scrape

pytestmark = pytest.mark.skipif(
    not os.environ.get("COMPOSE_TEST"), reason="runs under `make compose-test` (a Docker engine)"
)
COMPOSE = [str(Path(sys.executable).parent / "docker-compose"), "--project-directory", str(ROOT)]
WEB, FLOWER, MAILPIT = "http://127.0.0.1:8000", "http://127.0.0.1:5555", "http://127.0.0.1:8025"
SERVICES = {"web", "worker", "beat", "flower", "redis", "postgres", "mailpit"}


def compose(*args: str, timeout: float = 600) -> str:
    done = subprocess.run([*COMPOSE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"docker compose {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def up() -> None:
    compose("up", "-d", "--wait", "--wait-timeout", "300")


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    if not (ROOT / ".env").exists():
        subprocess.run(["make", "env"], cwd=ROOT, check=True)
    pairs = (line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines())
    return {k: v for k, v in (p for p in pairs if len(p) == 2) if not k.startswith("#")}


@pytest.fixture(scope="module")
def stack(dotenv):
    compose("build", timeout=1200)
    try:
        up()
        yield dotenv
    finally:
        compose("down", "--volumes", "--remove-orphans")


def emails_to(address: str) -> list[dict]:
    messages = requests.get(f"{MAILPIT}/api/v1/messages", timeout=5).json()["messages"]
    return [m for m in messages if address in [to["Address"] for to in m["To"]]]


def signed_up(username: str) -> ApiClient:
    client = ApiClient(WEB)
    assert client.sign_up(username).status_code == 201
    wait_for(lambda: emails_to(f"{username}@example.com"), timeout=60, what="the welcome email")
    return client


def test_every_service_is_healthy_and_migrate_completed(stack):
    states = {}
    listing = compose("ps", "--all", "--format", "{{.Service}} {{.State}} {{.Health}}")
    for line in listing.splitlines():
        service, state, *health = line.split()
        states[service] = (state, *health)
    assert {s: states[s] for s in SERVICES} == {s: ("running", "healthy") for s in SERVICES}
    assert "exited" in states["migrate"][0]
    exit_code = compose("ps", "--all", "--format", "{{.ExitCode}}", "migrate").strip()
    assert exit_code == "0"


def test_a_user_signs_up_shares_and_cleans_up_and_every_effect_is_done(stack):
    client = signed_up("journey")
    assert client.sign_in("journey").status_code == 200
    created = client.upload("/api/documents", {"title": "Plan", "file": upload_file(b"v1")})
    assert created.status_code == 201, created.text
    document = created.json()
    replaced = client.upload(f"/api/documents/{document['id']}/file", {"file": upload_file(b"v2")})
    assert replaced.status_code == 200, replaced.text
    shared = client.post(f"/api/documents/{document['id']}/share", {"email": "friend@example.org"})
    assert shared.status_code == 202
    [email] = wait_for(lambda: emails_to("friend@example.org"), timeout=60, what="the share email")
    # The recipient's link, from the email as mailpit holds it, downloads the file as replaced.
    raw = requests.get(f"{MAILPIT}/api/v1/message/{email['ID']}/raw", timeout=5).text
    body = message_from_string(raw, policy=default).get_body(("plain",)).get_content()
    [link] = [word for word in body.split() if "/shared/" in word]
    assert link.startswith(stack["SITE_URL"] + "/shared/")
    download = requests.get(WEB + urlsplit(link).path, timeout=10)
    assert download.status_code == 200 and download.content == b"v2"
    assert client.delete(f"/api/documents/{document['id']}").status_code == 204
    wait_for(client.all_done, timeout=60, what="every effect done")
    assert "step=done" in compose("logs", "worker")


def test_the_app_runs_as_its_own_user_and_writes_the_media_volume(stack):
    assert compose("exec", "-T", "web", "id", "-u").strip() == "10001"
    client = signed_up("writer")
    client.sign_in("writer")
    document = client.upload("/api/documents", {"title": "Kept", "file": upload_file(b"k")}).json()
    compose("exec", "-T", "web", "test", "-f", f"/data/media/{document['file']}")


def test_flower_asks_for_the_env_credentials_and_stays_healthy(stack):
    assert requests.get(f"{FLOWER}/api/workers", timeout=10).status_code == 401
    user, password = stack["FLOWER_BASIC_AUTH"].split(":", 1)
    assert requests.get(f"{FLOWER}/api/workers", auth=(user, password), timeout=10).ok
    assert "(healthy)" in compose("ps", "flower")


def test_metrics_answer_only_with_the_token(stack):
    assert requests.get(f"{WEB}/metrics", timeout=10).status_code in (401, 403)
    headers = {"Authorization": f"Bearer {stack['METRICS_TOKEN']}"}
    response = requests.get(f"{WEB}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200
    scrape = Scrape(response.text)
    assert scrape("offload_broker_up") == 1 and "offload_effects" in scrape.families


def test_two_workers_share_the_work(stack):
    compose("up", "-d", "--scale", "worker=2", "--wait", "--wait-timeout", "300")
    try:
        for i in range(4):
            signed_up(f"scaled{i}")
        assert len(compose("ps", "--format", "{{.Name}}", "worker").split()) == 2
    finally:
        compose("up", "-d", "--scale", "worker=1", "--wait", "--wait-timeout", "300")


def test_a_sign_up_after_redis_restarts_still_gets_its_email(stack):
    compose("restart", "redis")
    started = time.monotonic()
    signed_up("after-restart")
    assert time.monotonic() - started < 60


def test_down_then_up_keeps_users_and_uploaded_files(stack):
    client = signed_up("keeper")
    client.sign_in("keeper")
    document = client.upload("/api/documents", {"title": "Mine", "file": upload_file(b"m")}).json()
    compose("down")  # containers and networks; the volumes stay
    up()
    again = ApiClient(WEB)
    assert again.sign_in("keeper").status_code == 200
    assert [d["id"] for d in again.get("/api/documents").json()] == [document["id"]]
    compose("exec", "-T", "web", "test", "-f", f"/data/media/{document['file']}")
