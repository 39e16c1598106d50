"""State changes of an effect row. Each is a single conditional UPDATE, so two workers holding
the same message can never both run it, and only the attempt holding the claim can settle it."""

import json
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone

from .conf import conf
from .models import Effect


@dataclass(frozen=True, slots=True)
class Claim:
    """What one attempt holds: the effect's id, task and stored arguments, and the attempt
    number that fences every later write of this attempt (see ``_settle``)."""

    id: int
    task: str
    args: dict[str, Any]
    attempt: int
    user_id: int | None
    created_at: datetime


# The claim this process is running, set by EffectTask: an effect offloaded while it runs (a
# follow-up) concerns the same user, and an email it sends has a Message-ID fixed per effect.
current_claim: ContextVar[Claim | None] = ContextVar("current_claim", default=None)


# claim() and _settle() run for every effect, so they are written in SQL: one statement each,
# where the ORM needed a SELECT and an UPDATE. Both SQLite (3.35+) and PostgreSQL support
# UPDATE ... RETURNING.
CLAIM_SQL = """
    UPDATE {table}
    SET status = %(running)s, attempts = attempts + 1, started_at = %(now)s,
        leased_until = %(lease_end)s, retry_at = NULL
    {asynchronous_commit}
    WHERE id = %(id)s AND task = %(task)s AND (
        (status = %(pending)s AND (retry_at IS NULL OR retry_at <= %(now)s))
        OR (status = %(running)s AND (leased_until IS NULL OR leased_until < %(now)s))
    )
    RETURNING args, attempts, user_id, created_at
"""

# On PostgreSQL a claim commits without waiting for its WAL record to reach the disk
# (synchronous_commit off for the claim's own transaction: an fsync less per effect, 0.42 ->
# 0.20 ms a claim here). Other sessions see it as soon as it commits, as before; only a crash
# of the database server can undo it, and then only the last fraction of a second's claims:
# effects in flight at the crash, which may run again (as the guarantees allow). Settles stay
# synchronous: "done" is durable. Not inside a caller's transaction, whose commit it would be.
ASYNCHRONOUS_COMMIT = {
    "postgresql": "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit",
}


def claim(effect_id: int, task: str) -> Claim | None:
    """Take the effect for this attempt, or return None when it is not ours to run.

    Claimable: an effect of this ``task`` (a message naming another task's effect must not run
    this task's code on that effect's arguments) that is pending and due (not waiting for its
    retry time), or running past its lease: the attempt that held it stopped renewing it
    because its worker died or was cut off.
    """
    now = timezone.now()
    params = {
        "running": Effect.Status.RUNNING, "pending": Effect.Status.PENDING,
        "now": _db_time(now), "lease_end": _db_time(now + conf.lease),
        "id": effect_id, "task": task,
    }  # fmt: skip
    with connection.cursor() as cursor:
        asynchronous = (
            "" if connection.in_atomic_block else ASYNCHRONOUS_COMMIT.get(connection.vendor, "")
        )
        cursor.execute(CLAIM_SQL.format(table=_table(), asynchronous_commit=asynchronous), params)
        row = cursor.fetchone()
    if row is None:
        return None
    args, attempts, user_id, created_at = row
    return Claim(
        id=effect_id,
        task=task,
        args=json.loads(args) if isinstance(args, str | bytes) else args,
        attempt=attempts,
        user_id=user_id,
        created_at=_aware(created_at),
    )


def _settle(claim: Claim, **fields: Any) -> bool:
    """UPDATE the row if this attempt still holds the claim; True when it did."""
    assignments = ", ".join(f"{connection.ops.quote_name(name)} = %s" for name in fields)
    values = [_db_time(v) if isinstance(v, datetime) else v for v in fields.values()]
    sql = f"UPDATE {_table()} SET {assignments} WHERE id = %s AND status = %s AND attempts = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, claim.id, Effect.Status.RUNNING, claim.attempt])
        return bool(cursor.rowcount == 1)


def _table() -> str:
    return connection.ops.quote_name(Effect._meta.db_table)


def _db_time(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _aware(value: str | datetime) -> datetime:
    """A timestamp read by raw SQL: SQLite gives naive UTC text, PostgreSQL an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def complete(claim: Claim) -> bool:
    return _settle(claim, status=Effect.Status.DONE, finished_at=timezone.now(), last_error="")


def skip(claim: Claim, reason: str) -> bool:
    """Ended without its work: what it was about had gone. ``reason`` says what."""
    return _settle(
        claim,
        status=Effect.Status.SKIPPED,
        finished_at=timezone.now(),
        last_error="",
        reason=reason[: Effect._meta.get_field("reason").max_length],
    )


def renew(claim: Claim) -> bool:
    """Extend the lease of an attempt that is still running; False when it no longer holds it."""
    return _settle(claim, leased_until=timezone.now() + conf.lease)


def release(claim: Claim, error: str, retry_at: datetime) -> bool:
    """Back to pending after a transient failure, until ``retry_at``; the relay publishes it
    then (a retry waits in the ledger, not in a worker's memory)."""
    return _settle(
        claim, status=Effect.Status.PENDING, last_error=error, retry_at=retry_at, published_at=None
    )


def bury(claim: Claim, error: str) -> bool:
    """Dead-letter: no more attempts until someone replays it."""
    return _settle(claim, status=Effect.Status.DEAD, finished_at=timezone.now(), last_error=error)


def prune(days: int) -> int:
    """Delete done and skipped effects finished more than ``days`` days ago. Returns the count."""
    cutoff = timezone.now() - timedelta(days=days)
    ended = Effect.objects.filter(
        status__in=[Effect.Status.DONE, Effect.Status.SKIPPED], finished_at__lt=cutoff
    )
    deleted, _ = ended.delete()
    return deleted


def oldest_pending_seconds() -> float:
    """How long the oldest pending effect has waited (0 when none is pending)."""
    oldest = Effect.objects.filter(status=Effect.Status.PENDING).aggregate(t=Min("created_at"))["t"]
    return (timezone.now() - oldest).total_seconds() if oldest else 0.0


def summary() -> dict[str, Any]:
    """Counts by status and the age of the oldest pending effect (`manage.py effects`)."""
    counts = dict.fromkeys(Effect.Status.values, 0)
    counts.update(Effect.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return {"counts": counts, "oldest_pending_seconds": oldest_pending_seconds()}
