"""offload builds its messages itself (offload/messages.py): they must be Celery's own, field for
field, for the pinned Celery, kombu and Flower."""

import base64
import json

import pytest
import requests
from django.db import transaction

from devtools.localredis import free_port
from devtools.processes import Service, answers, celery, start_worker, wait_for
from notifications import tasks
from offload import messages
from offload.models import Effect
from tests.factories import WELCOME_TASK, make_user

pytestmark = pytest.mark.django_db(transaction=True)

IDS = {("headers", "id"), ("headers", "root_id"), ("properties", "correlation_id")}


def test_an_effect_message_is_the_message_celery_sends(broker):
    # Celery's own, as its apply_async sends it (with what offload passes: the id only, no
    # time limits, the precomputed argsrepr).
    tasks.send_password_reset_email.apply_async(
        (7,), argsrepr="(7,)", kwargsrepr="{}", time_limit=None, soft_time_limit=None
    )
    [theirs] = [json.loads(raw) for raw in broker.lrange("emails", 0, -1)]
    # Built in this thread, as Celery's was (reply_to names the thread that built the message).
    messages._template.cache_clear()
    queue, raw = messages.message("send_password_reset_email", 7)
    ours = json.loads(raw)

    assert queue == "emails"
    assert base64.b64decode(ours["body"]) == base64.b64decode(theirs["body"])
    assert set(ours) == set(theirs)
    # Celery also copies argsrepr and kwargsrepr into the properties, where nothing reads them.
    for part, ignored in (("headers", set()), ("properties", {"argsrepr", "kwargsrepr"})):
        assert set(ours[part]) == set(theirs[part]) - ignored
        for name in ours[part]:
            if (part, name) in IDS or name == "delivery_tag":
                assert ours[part][name] != theirs[part][name], "a fresh id per message"
            else:
                assert ours[part][name] == theirs[part][name], (part, name)
    assert ours["properties"]["delivery_tag"] == ours["headers"]["id"]
    for key in ("content-type", "content-encoding"):
        assert ours[key] == theirs[key], key


@pytest.mark.integration
def test_a_worker_runs_it_and_flower_shows_it_as_one_of_its_own(
    worker_env, tmp_path, broker, smtp_sink
):
    port = free_port()
    flower = Service(
        celery("flower", f"--port={port}", "--address=127.0.0.1"),
        {**worker_env, "FLOWER_BASIC_AUTH": "flower:secret"},
        tmp_path / "flower.log",
        lambda s: answers(f"http://127.0.0.1:{port}/healthcheck"),
    ).start()
    worker = None
    try:
        # -E: task events, which Flower turns on by itself only for workers it sees start.
        worker = start_worker(worker_env, tmp_path / "worker.log", "w1", 1, "-E")
        with transaction.atomic():  # its welcome email, published after the commit
            user = make_user()
        effect = Effect.objects.get(user=user, task=WELCOME_TASK)
        api = f"http://127.0.0.1:{port}/api/tasks"

        def shown() -> list[dict]:
            found = requests.get(api, auth=("flower", "secret"), timeout=5).json()
            return [t for t in found.values() if t.get("args") == f"({effect.pk},)" and t["result"]]

        [task] = wait_for(shown, timeout=30, what="Flower to show the task's result")

        def queue_lengths() -> dict[str, int]:
            response = requests.get(
                f"http://127.0.0.1:{port}/api/queues/length", auth=("flower", "secret"), timeout=5
            )  # 404 "broker is not supported" when the broker URL's scheme is not Redis's
            found = response.json()["active_queues"] if response.ok else []
            return {queue["name"]: queue["messages"] for queue in found}

        # Flower's Broker view reads the queues of the worker's -Q.
        lengths = wait_for(
            lambda: (q := queue_lengths()).keys() == {"emails", "files", "records"} and q,
            timeout=30,
            what="Flower's queue lengths",
        )
    finally:
        if worker:
            worker.stop()
        flower.stop()
    assert task["name"] == WELCOME_TASK
    assert task["state"] == "SUCCESS"
    assert task["result"] == "'done'"
    assert lengths == {"emails": 0, "files": 0, "records": 0}
    effect.refresh_from_db()
    assert (effect.status, effect.attempts) == ("done", 1)
    assert smtp_sink.to(user.email)
