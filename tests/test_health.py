"""Health, readiness, metrics and logs against real processes: gunicorn, a Celery worker and a
private Redis that the tests stop and start."""

import json
import logging
from datetime import timedelta

import pytest
import requests
from django.contrib.auth.tokens import default_token_generator
from django.core.management import call_command
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from devtools.localredis import LocalRedis
from devtools.processes import start_web, start_worker, wait_for
from offload.models import Effect
from tests.client import ApiClient
from tests.factories import WELCOME_TASK, make_document, make_user
from tests.scrape import Scrape

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TOKEN = "test-metrics-token"


@pytest.fixture
def stack(worker_env, tmp_path):
    """A private Redis, gunicorn and a worker (JSON logs) sharing the test database."""
    server = LocalRedis().start()
    env = {
        **worker_env,
        "REDIS_URL": server.url,
        "METRICS_TOKEN": TOKEN,
        "LOG_FORMAT": "json",
        "PASSWORD_HASHERS": "django.contrib.auth.hashers.MD5PasswordHasher",
    }
    stack = {"redis": server, "env": env, "tmp": tmp_path}
    try:
        stack["web"] = start_web(env, tmp_path / "web.log")
        stack["worker"] = start_worker(env, tmp_path / "worker.log")
        yield stack
    finally:
        # Whatever the test left in the stack (it may have replaced the worker) is stopped.
        for name in ("worker", "web", "redis"):
            if name in stack:
                stack[name].stop()


def get(stack, path, **kwargs):
    return requests.get(stack["web"].url + path, timeout=10, **kwargs)


def failing(stack) -> list[str]:
    """What /readyz says is failing; a 503 always names something."""
    response = get(stack, "/readyz")
    names = response.json()["failing"]
    assert (response.status_code == 503) == bool(names), response.text
    return names


def test_healthz_answers_while_the_process_runs(stack):
    response = get(stack, "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_healthz_answers_a_probe_by_any_address_and_the_rest_keeps_allowed_hosts(
    worker_env, tmp_path
):
    """ALLOWED_HOSTS set for real, as in production: the container's probe asks 127.0.0.1."""
    env = {**worker_env, "ALLOWED_HOSTS": "app.example.com", "HTTPS": "true"}
    web = start_web(env, tmp_path / "web.log")  # its start waits for /healthz: 200
    try:
        for host in ("127.0.0.1:8000", "10.0.0.7", "attacker.example"):
            response = requests.get(web.url + "/healthz", headers={"Host": host}, timeout=10)
            assert response.status_code == 200 and response.json() == {"status": "ok"}, host
        refused = requests.get(web.url + "/api/csrf", timeout=10, allow_redirects=False)
        assert refused.status_code == 400, "every other page still checks the Host"
    finally:
        web.stop()


def test_readyz_names_the_part_that_is_missing(stack):
    ready = get(stack, "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["failing"] == []

    # Each web process reuses its answer for READYZ_CACHE_SECONDS (5 s): poll.
    stack["worker"].stop()
    wait_for(lambda: failing(stack) == ["worker"], what="not ready: worker")

    stack["worker"] = start_worker(stack["env"], stack["tmp"] / "worker-2.log")
    wait_for(lambda: get(stack, "/readyz").status_code == 200, what="ready again")

    stack["redis"].stop()
    wait_for(lambda: "broker" in failing(stack), what="not ready: broker")
    assert get(stack, "/healthz").status_code == 200, "alive even when not ready"
    stack["redis"].start()


@pytest.mark.django_db
def test_readyz_checks_at_most_once_per_interval(client, settings, django_assert_num_queries):
    """A probe, or anyone, asking every 100 ms costs one check per READYZ_CACHE_SECONDS."""
    from offload import views

    views._ready = (0.0, 503, {})  # whatever an earlier test left
    with django_assert_num_queries(1):  # SELECT 1
        first = client.get("/readyz")
    with django_assert_num_queries(0):
        assert client.get("/readyz").json() == first.json()
    settings.READYZ_CACHE_SECONDS = 0
    views._ready = (0.0, 503, {})
    with django_assert_num_queries(2):
        client.get("/readyz")
        client.get("/readyz")


def test_metrics_need_the_token(stack):
    assert get(stack, "/metrics").status_code == 401
    wrong = get(stack, "/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "Unauthorized" in wrong.text and "offload_" not in wrong.text


def scrape(stack) -> Scrape:
    response = get(stack, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return Scrape(response.text)


def test_metrics_count_what_happened_and_keep_counting_past_the_prune(stack, smtp_sink):
    welcome = {"task": WELCOME_TASK}
    done = {**welcome, "outcome": "done"}
    before = scrape(stack)
    assert all(name.startswith("offload_") for name in before.families), list(before.families)
    assert before("offload_broker_up") == 1
    assert "offload_queue_depth" in before.families and before("offload_dead_letters") == 0

    client = ApiClient(stack["web"].url)
    smtp_sink.refuse_once.add("metrics-2@example.com")  # its first attempt fails: a retry
    assert client.sign_up("metrics-1").status_code == 201
    assert client.sign_up("metrics-2").status_code == 201
    wait_for(
        lambda: (
            scrape(stack)("offload_effect_retries_total", **welcome)
            == before("offload_effect_retries_total", **welcome) + 1
        ),
        what="the retry counted",
    )
    after = wait_for(
        lambda: (
            (now := scrape(stack))("offload_effects_finished_total", **done)
            == before("offload_effects_finished_total", **done) + 2
            and now
        ),
        what="both done, counted",
    )
    for histogram, attempts in (("duration", 3), ("latency", 2)):
        name = f"offload_effect_{histogram}_seconds"
        count = after(f"{name}_count", **welcome) - before(f"{name}_count", **welcome)
        assert count == attempts, name  # every attempt has a duration, every done a latency
        assert after(f"{name}_sum", **welcome) > before(f"{name}_sum", **welcome)

    # The daily prune deletes done effects: the state drops, the count of what happened stays.
    old = timezone.now() - timedelta(days=30)
    Effect.objects.filter(status="done").update(created_at=old, finished_at=old)
    call_command("effects", "prune")
    pruned = scrape(stack)
    assert pruned("offload_effects", status="done", **welcome) == 0
    assert pruned("offload_effects_finished_total", **done) == after(
        "offload_effects_finished_total", **done
    )


def test_the_worker_logs_one_json_line_per_attempt(stack):
    assert ApiClient(stack["web"].url).sign_up("json-1").status_code == 201

    def effect_lines():
        lines = []
        for line in stack["worker"].log().splitlines():
            if line.startswith("{") and '"effect"' in line:
                lines.append(json.loads(line))
        return [e for e in lines if e["task"] == WELCOME_TASK and e["step"] == "done"] and lines

    lines = wait_for(effect_lines, what="the effect's log lines")
    steps = [(line["task"], line["step"]) for line in lines if line["task"] == WELCOME_TASK]
    assert steps == [(WELCOME_TASK, "done")], "one line per attempt, at its end"
    done = next(line for line in lines if line["step"] == "done")
    assert {"effect", "user", "attempt", "duration_ms", "time", "level"} <= set(done)
    log = stack["worker"].log()
    assert "] received" not in log and "] succeeded in" not in log, "no Celery line repeats ours"


def test_access_logs_never_show_a_share_or_reset_token(stack):
    """gunicorn (gunicorn.conf.py) logs every request line: a share link and a password reset
    link grant what they name to whoever reads them, so their tokens are redacted."""
    user = make_user("logged")
    share = make_document(user).share_token()
    uid, reset = (
        urlsafe_base64_encode(force_bytes(user.pk)),
        default_token_generator.make_token(user),
    )
    assert get(stack, f"/shared/{share}").status_code == 200
    assert get(stack, f"/password/reset/{uid}/{reset}/", allow_redirects=False).status_code == 302

    log = wait_for(
        lambda: (
            (text := stack["web"].log()) and f"/password/reset/{uid}/[redacted]/" in text and text
        ),
        what="both request lines in the access log",
    )
    assert "/shared/[redacted]" in log
    assert share not in log and reset not in log


def test_runserver_request_lines_are_redacted_too(caplog):
    logging.getLogger("django.server").info('"%s" %s %s', "GET /shared/abc:1x:sig HTTP/1.1", 200, 5)
    assert '"GET /shared/[redacted] HTTP/1.1" 200 5' in caplog.text and "abc:1x" not in caplog.text


def test_the_live_views_polls_leave_no_access_line(stack):
    """Each open activity tab polls /activity/live every second: a line each would bury the
    rest. Its failures still log; so does every other request."""
    client = ApiClient(stack["web"].url)
    assert client.sign_up("polling").status_code == 201
    assert client.sign_in("polling").status_code == 200
    for _ in range(3):
        polled = client.get("/activity/live")
        assert polled.status_code == 200 and polled.url.endswith("/activity/live"), polled.url
    # Two requests after the polls, waited for in turn: gunicorn writes a line after its
    # response, so by the second one's line every poll's would be in the log.
    assert client.get("/api/me").status_code == 200
    wait_for(lambda: '"GET /api/me ' in stack["web"].log(), what="the first request line after")
    assert client.get("/api/me/logins").status_code == 200
    log = wait_for(
        lambda: (text := stack["web"].log()) and '"GET /api/me/logins' in text and text,
        what="the second request line after the polls",
    )
    assert "/activity/live" not in log
    assert '"POST /api/users ' in log


@pytest.mark.parametrize(("status", "logged"), [(200, False), (500, True)])
def test_runserver_leaves_out_the_polls_that_answered(caplog, status, logged):
    line = "GET /activity/live HTTP/1.1"
    logging.getLogger("django.server").info(
        '"%s" %s %s', line, status, 5, extra={"status_code": status}
    )
    assert (line in caplog.text) == logged
