"""The durable ledger: coalescing, publish times, replay, prune and the `effects` command."""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devtools.processes import wait_for
from notifications import tasks
from offload import ledger
from offload.models import Effect
from tests.factories import WELCOME_TASK, make_document, make_user
from tests.postgres import backend_pid, waiting_on_a_lock

pytestmark = [pytest.mark.django_db, pytest.mark.ledger]


def run(*args) -> str:
    out = StringIO()
    call_command("effects", *args, stdout=out)
    return out.getvalue()


def age(effect_ids, **fields):
    Effect.objects.filter(pk__in=effect_ids).update(**fields)


def test_a_successful_publish_is_timed(django_capture_on_commit_callbacks, broker):
    with django_capture_on_commit_callbacks(execute=True):
        effect = tasks.refresh_profile_counters.offload(user_id=make_user().pk)
    effect.refresh_from_db()
    assert effect.published_at is not None
    assert broker.effect_ids("records") == [effect.pk]


def test_insert_writes_the_row_the_orm_would():
    user = make_user()
    fields = {
        "task": "t",
        "args": {"n": [1, "é"]},
        "user_id": user.pk,
        "created_at": timezone.now(),
    }
    by_orm = Effect.objects.create(**fields)
    inserted = ledger.insert(Effect(**fields))

    assert inserted.pk > by_orm.pk
    assert not inserted._state.adding  # a later save() updates the row
    columns = [field.attname for field in Effect._meta.concrete_fields if not field.primary_key]
    stored = {row[0]: row[1:] for row in Effect.objects.values_list("pk", *columns)}
    assert stored[inserted.pk] == stored[by_orm.pk]
    inserted.refresh_from_db()  # and it reads back as the ORM's own
    assert inserted.args == {"n": [1, "é"]}


def test_refreshes_coalesce_while_one_is_pending_but_not_once_it_started():
    owner = make_user()
    for _ in range(3):
        make_document(owner)
    assert Effect.objects.filter(task="refresh_profile_counters").count() == 1

    Effect.objects.filter(task="refresh_profile_counters").update(
        status=Effect.Status.RUNNING, attempts=1, started_at=timezone.now()
    )
    make_document(owner)
    assert Effect.objects.filter(task="refresh_profile_counters").count() == 2


def test_different_arguments_do_not_coalesce():
    make_document(make_user())
    make_document(make_user())
    assert Effect.objects.filter(task="refresh_profile_counters").count() == 2


def test_emails_never_coalesce():
    user = make_user()
    for _ in range(2):
        tasks.send_share_email.offload(
            document_id=1, recipient="a@example.com", shared_by_id=user.pk
        )
    assert Effect.objects.filter(task="send_share_email").count() == 2


def test_replay_gives_dead_letters_fresh_attempts(django_capture_on_commit_callbacks, broker):
    make_user()
    [effect] = Effect.objects.all()
    age([effect.pk], status="dead", attempts=5, last_error="boom", finished_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert "replayed 1 dead letter(s)" in run("replay", str(effect.pk))
    effect.refresh_from_db()
    assert (effect.status, effect.attempts, effect.finished_at) == ("pending", 0, None)
    assert effect.last_error == "boom", "kept until the next attempt, for the record"
    assert broker.effect_ids("emails") == [effect.pk]


def test_replay_touches_only_dead_letters():
    make_user()
    assert "replayed 0" in run("replay", "--all")
    assert Effect.objects.get().status == "pending"


def test_replay_needs_a_choice():
    with pytest.raises(CommandError):
        run("replay")


def test_prune_deletes_only_old_ended_effects():
    for _ in range(4):
        make_user()
    old, skipped, dead, recent = Effect.objects.order_by("pk")
    week_ago = timezone.now() - timedelta(days=8)
    age([old.pk, recent.pk], status="done", finished_at=week_ago)
    age([skipped.pk], status="skipped", finished_at=week_ago)
    age([dead.pk], status="dead", finished_at=week_ago)  # kept for a replay
    age([recent.pk], finished_at=timezone.now())
    assert "pruned 2 " in run("prune", "--days", "7")
    assert list(Effect.objects.order_by("pk").values_list("pk", flat=True)) == [dead.pk, recent.pk]


def test_status_shows_counts_and_the_oldest_pending():
    make_user()
    Effect.objects.update(created_at=timezone.now() - timedelta(seconds=90))
    out = run()
    assert "pending  1" in out and "done     0" in out
    assert "oldest pending: 9" in out


def test_the_oldest_pending_counts_from_when_each_effect_was_due():
    now = timezone.now()
    long_ago = now - timedelta(hours=2)
    # Scheduled an hour ahead (a django.tasks run_after): not late, whatever its age.
    Effect.objects.create(task="later", created_at=long_ago, retry_at=now + timedelta(hours=1))
    assert ledger.oldest_pending_seconds() == 0
    # Its retry due 30 s ago: late by 30 s, not by the two hours since it was recorded.
    Effect.objects.create(task="retry", created_at=long_ago, retry_at=now - timedelta(seconds=30))
    assert 30 <= ledger.oldest_pending_seconds() < 40
    Effect.objects.create(task="new", created_at=now - timedelta(seconds=90))
    assert 90 <= ledger.oldest_pending_seconds() < 100


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_a_coalesced_effect_cannot_be_claimed_before_the_change_commits():
    """Otherwise a worker could recount before the joining change is visible, and miss it.

    PostgreSQL only: there the twin's row lock is what holds the worker back, and the test sees
    the worker's connection wait on it. (SQLite's immediate transactions lock the whole
    database for writing, so a claim cannot run before the commit in any case.)"""
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL only (run with DATABASE_URL=postgres://...)")
    owner = make_user()
    make_document(owner)
    [pending] = Effect.objects.filter(task="refresh_profile_counters")
    worker_pid, claims = [], []

    def claim_from_another_connection():
        worker_pid.append(backend_pid())
        claims.append(ledger.claim(pending.pk, "refresh_profile_counters"))
        connection.close()

    worker = threading.Thread(target=claim_from_another_connection)
    with transaction.atomic():
        make_document(owner)  # joins `pending` and holds it
        assert Effect.objects.filter(task="refresh_profile_counters").count() == 1
        worker.start()
        wait_for(lambda: worker_pid, what="the worker's connection")
        wait_for(lambda: waiting_on_a_lock(worker_pid[0]), what="the claim to wait on the lock")
        assert claims == [], "the effect was claimed while the change was uncommitted"
    worker.join(timeout=20)
    assert claims[0] is not None and claims[0].attempt == 1


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_only_the_claims_own_commit_skips_the_wal_flush():
    """A claim's transaction commits with synchronous_commit off (ledger.ASYNCHRONOUS_COMMIT);
    the connection's later commits, and a caller's transaction around a claim, keep waiting
    for the disk."""
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit: PostgreSQL only (run with DATABASE_URL=postgres://...)")
    make_user()
    make_user()
    first, second = Effect.objects.filter(task=WELCOME_TASK).order_by("pk")

    def synchronous_commit() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    def claim_sql(effect) -> str:
        with CaptureQueriesContext(connection) as queries:
            assert ledger.claim(effect.pk, WELCOME_TASK).attempt == 1
        [sql] = [q["sql"] for q in queries if q["sql"].lstrip().startswith("UPDATE")]
        return sql

    assert "set_config('synchronous_commit', 'off', true)" in claim_sql(first)
    assert synchronous_commit() == "on", "for the claim's own transaction only"
    with transaction.atomic():
        assert "synchronous_commit" not in claim_sql(second), "not the caller's commit"
        assert synchronous_commit() == "on"
