"""State changes of an effect row. Each is a single conditional UPDATE, so two workers holding
the same message can never both run it, and only the attempt holding the claim can settle it."""

import json
import logging
from datetime import UTC, datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Min, Q, QuerySet
from django.utils import timezone

from project.celery import app

from .models import Effect
from .offload import publish, publish_new

logger = logging.getLogger(__name__)


# claim() and _settle() run for every effect, so they are written in SQL: one statement each,
# where the ORM took two queries and ~10x the time (docs/BENCHMARKS.md). Both SQLite (3.35+)
# and PostgreSQL support UPDATE ... RETURNING.
CLAIM_SQL = """
    UPDATE {table} SET status = %s, attempts = attempts + 1, started_at = %s
    WHERE id = %s AND task = %s AND (status = %s OR (status = %s AND started_at < %s))
    RETURNING args, attempts, user_id, created_at
"""


def claim(effect_id: int, task: str) -> Effect | None:
    """Take the effect for this attempt, or return None when it is not ours to run.

    Claimable: an effect of this ``task`` (a message naming another task's effect must not run
    this task's code on that effect's arguments), pending, or running past its lease (the worker
    that held it died; the lease is longer than the task time limit, so a live attempt is never
    taken over).
    """
    now = timezone.now()
    params = [
        Effect.Status.RUNNING, _db_time(now), effect_id, task,
        Effect.Status.PENDING, Effect.Status.RUNNING, _db_time(now - settings.EFFECT_LEASE),
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL.format(table=_table()), params)
        row = cursor.fetchone()
    if row is None:
        return None
    args, attempts, user_id, created_at = row
    return Effect(
        pk=effect_id,
        task=task,
        args=json.loads(args) if isinstance(args, str | bytes) else args,
        attempts=attempts,
        user_id=user_id,
        created_at=_aware(created_at),
        status=Effect.Status.RUNNING,
        started_at=now,
    )


def _settle(effect: Effect, **fields) -> bool:
    """UPDATE the row if this attempt still holds the claim; True when it did."""
    assignments = ", ".join(f"{connection.ops.quote_name(name)} = %s" for name in fields)
    values = [_db_time(v) if isinstance(v, datetime) else v for v in fields.values()]
    sql = f"UPDATE {_table()} SET {assignments} WHERE id = %s AND status = %s AND attempts = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, effect.pk, Effect.Status.RUNNING, effect.attempts])
        return cursor.rowcount == 1


def _table() -> str:
    return connection.ops.quote_name(Effect._meta.db_table)


def _db_time(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def _aware(value) -> datetime:
    """A timestamp read by raw SQL: SQLite gives naive UTC text, PostgreSQL an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def complete(effect: Effect) -> bool:
    return _settle(effect, status=Effect.Status.DONE, finished_at=timezone.now(), last_error="")


def release(effect: Effect, error: str) -> bool:
    """Back to pending after a transient failure; the retry message is published right after."""
    return _settle(
        effect, status=Effect.Status.PENDING, last_error=error, published_at=timezone.now()
    )


def bury(effect: Effect, error: str) -> bool:
    """Dead-letter: no more attempts until someone replays it."""
    return _settle(effect, status=Effect.Status.DEAD, finished_at=timezone.now(), last_error=error)


@transaction.atomic
def replay(effects: QuerySet) -> int:
    """Give dead letters a fresh set of attempts and publish them once this commits."""
    ids = list(effects.filter(status=Effect.Status.DEAD).values_list("pk", "task"))
    Effect.objects.filter(pk__in=[pk for pk, _ in ids]).update(
        status=Effect.Status.PENDING, attempts=0, finished_at=None, published_at=None
    )
    for pk, name in ids:
        transaction.on_commit(partial(publish_new, app.tasks[name], pk))
    return len(ids)


def due_for_relay(now) -> QuerySet:
    """Effects whose message may never arrive, oldest first."""
    never_published = Q(
        status=Effect.Status.PENDING,
        published_at__isnull=True,
        created_at__lt=now - settings.EFFECT_RELAY_GRACE,
    )
    lost = Q(status=Effect.Status.PENDING, published_at__lt=now - settings.EFFECT_REPUBLISH_AFTER)
    # Claimed by a worker that died: publish once per lost claim (or after REPUBLISH_AFTER).
    abandoned = Q(status=Effect.Status.RUNNING, started_at__lt=now - settings.EFFECT_LEASE) & (
        Q(published_at__isnull=True)
        | Q(published_at__lt=F("started_at"))
        | Q(published_at__lt=now - settings.EFFECT_REPUBLISH_AFTER)
    )
    return Effect.objects.filter(never_published | lost | abandoned).order_by("created_at")


def relay(limit: int = 1000) -> int:
    """Publish again what the broker may never have had or may have lost. Returns the count."""
    now = timezone.now()
    published = []
    for pk, name in due_for_relay(now).values_list("pk", "task")[:limit]:
        task = app.tasks.get(name)
        if task is None:  # renamed or removed in a deploy: nothing can ever run it
            Effect.objects.filter(pk=pk).update(
                status=Effect.Status.DEAD, finished_at=now, last_error=f"unknown task {name!r}"
            )
        elif publish(task, pk):
            published.append(pk)
    Effect.objects.filter(pk__in=published).update(published_at=now)
    if published:
        logger.info("relay published %s effect(s) again", len(published))
    return len(published)


def prune(days: int) -> int:
    """Delete done effects finished more than ``days`` days ago. Returns the count."""
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = Effect.objects.filter(status=Effect.Status.DONE, finished_at__lt=cutoff).delete()
    return deleted


def oldest_pending_seconds() -> float:
    """How long the oldest pending effect has waited (0 when none is pending)."""
    oldest = Effect.objects.filter(status=Effect.Status.PENDING).aggregate(t=Min("created_at"))["t"]
    return (timezone.now() - oldest).total_seconds() if oldest else 0.0


def summary() -> dict:
    """Counts by status and the age of the oldest pending effect (`manage.py effects`)."""
    counts = dict.fromkeys(Effect.Status.values, 0)
    counts.update(Effect.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return {"counts": counts, "oldest_pending_seconds": oldest_pending_seconds()}
