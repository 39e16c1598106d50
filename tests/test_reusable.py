"""README's promise, "copy offload/ into your own project", kept by a second Django project.

tests/sample/ is a tiny project of its own (settings, Celery app, one app with a receiver and an
EffectTask) that uses nothing of this project but the offload package, and no EFFECT_* setting.
Its processes (migrate, a shell, a real worker) run as subprocesses with its settings; this
process only reads the sample's SQLite file, so the project's settings and Celery app here are
never mixed with the sample's.
"""

import base64
import json
import os
import textwrap
from pathlib import Path

import grimp
import pytest
import redis
from django.conf import settings

from devtools.processes import Service, wait_for
from tests import subprojects
from tests.subprojects import django

# Celery's default queue: the sample routes nothing, so its effects travel on this one.
SAMPLE_QUEUE = "celery"

CREATE_NOTE = textwrap.dedent(
    """
    import json, os, redis
    from django.db import transaction
    from offload.models import Effect
    from tests.sample.models import Note

    queue = redis.Redis.from_url(os.environ["REDIS_URL"])
    with transaction.atomic():
        note = Note.objects.create(text="hello")
        # Still inside the transaction that created the note: the receiver's effect must be
        # here already, and not yet published.
        inside = list(Effect.objects.filter(args__note_id=note.pk).values_list("task", flat=True))
        queued_inside = queue.llen("celery")
    print(json.dumps({
        "note": note.pk,
        "inside": inside,
        "queued": [queued_inside, queue.llen("celery")],
    }))
    """
)


@pytest.fixture
def sample_env(tmp_path) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.sample.settings",
        "SAMPLE_DATABASE": str(tmp_path / "sample.sqlite3"),
        # The session's broker (make test starts a private Redis and sets REDIS_URL).
        "REDIS_URL": settings.CELERY_BROKER_URL,
        "PYTHONUNBUFFERED": "1",  # the worker's log is complete even if it is killed
    }


@pytest.fixture
def sample_queue():
    """The broker's client, with the sample's queue empty before and after the test: other
    tests' workers never consume it, so a message left there would just linger."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(SAMPLE_QUEUE)
    yield client
    client.delete(SAMPLE_QUEUE)
    client.close()


def query(env: dict, sql: str, *params) -> list[tuple]:
    return subprojects.query(env["SAMPLE_DATABASE"], sql, *params)


def start_sample_worker(env: dict, log_path: Path) -> Service:
    return subprojects.start_worker("tests.sample", env, log_path, SAMPLE_QUEUE, "sample")


@pytest.mark.integration
def test_a_project_with_only_offload_runs_an_offloaded_effect_once(
    sample_env, sample_queue, tmp_path
):
    django(sample_env, "migrate", "--run-syncdb", "--noinput")
    django(sample_env, "check")

    created = json.loads(django(sample_env, "shell", "-c", CREATE_NOTE).strip().splitlines()[-1])
    note = created["note"]
    # Recorded by the sample's receiver in the note's own transaction, unpublished until the
    # commit, then published (no relay runs here: only the publish after commit can have).
    assert created["inside"] == ["sample.stamp_note"]
    assert created["queued"] == [0, 1], "published after the commit, not before"
    [(effect_id, status, user_id)] = query(
        sample_env, "SELECT id, status, user_id FROM workers_effect WHERE task = ?",
        "sample.stamp_note",
    )  # fmt: skip
    assert (status, user_id) == ("pending", None)  # user_arg=None: the effect concerns no user
    # Only the effect's id travels; the worker reads the arguments from the ledger.
    [raw] = sample_queue.lrange(SAMPLE_QUEUE, 0, -1)
    message = json.loads(raw)
    assert json.loads(base64.b64decode(message["body"]))[0] == [effect_id]
    delivery_tag = message["properties"]["delivery_tag"]

    def effect_row() -> tuple:
        [row] = query(
            sample_env, "SELECT status, attempts, task FROM workers_effect WHERE id = ?", effect_id
        )
        return row

    def settled() -> bool:
        # Done in the ledger, and the message acknowledged (out of the queue and of kombu's
        # "unacked" hash). The row is done before the worker acknowledges (acks_late): stopping
        # it in between would hand the message back (reject_on_worker_lost), and leave it here.
        return (
            effect_row()[0] == "done"
            and sample_queue.llen(SAMPLE_QUEUE) == 0
            and not sample_queue.hexists("unacked", delivery_tag)
        )

    worker = start_sample_worker(sample_env, tmp_path / "worker.log")
    try:
        wait_for(
            settled,
            timeout=30,
            what="the sample's effect to be done and its message acknowledged",
            diagnose=lambda: f"effect {effect_row()}; worker log:\n{worker.log()[-3000:]}",
        )
    finally:
        worker.stop()

    assert effect_row() == ("done", 1, "sample.stamp_note")
    assert query(sample_env, "SELECT note_id FROM sample_stamp") == [(note,)]  # ran once
    assert f"effect={effect_id} task=sample.stamp_note" in worker.log()
    assert sample_queue.llen(SAMPLE_QUEUE) == 0


def test_the_sample_project_imports_nothing_of_this_project():
    # offload itself is held to this by the import contracts (pyproject.toml); the sample must
    # be too, or it would not prove that offload works on its own.
    graph = grimp.build_graph("tests", "offload", "project", "notifications", cache_dir=None)
    for package in ("project", "notifications"):
        assert not graph.chain_exists(importer="tests.sample", imported=package, as_packages=True)
    assert graph.chain_exists(importer="tests.sample", imported="offload", as_packages=True)
