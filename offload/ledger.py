"""State changes of an effect row. Each is a single conditional UPDATE, so two workers holding
the same message can never both run it, and only the attempt holding the claim can settle it."""

import json
import re
import socket
import traceback
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Count, Min, Q
from django.db.models.functions import Coalesce
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


# The end of a long traceback that is kept: where it was raised and what it said.
TRACEBACK_LIMIT = 8000

# The password of a URL (redis://:secret@host, postgres://user:secret@host/db) that an error
# message may quote.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Failure:
    """What an attempt's error leaves in the ledger: ``summary`` ("ValueError: bad id") as the
    effect's last error, and ``record`` ({"exception_class_path", "traceback"}, as django.tasks
    reports errors) added to its list of errors."""

    summary: str
    record: dict[str, str]

    @classmethod
    def of(cls, exc: BaseException) -> "Failure":
        kind = type(exc)
        trace = masked("".join(traceback.format_exception(exc)))
        return cls(
            summary=summarize(exc),
            record={
                "exception_class_path": f"{kind.__module__}.{kind.__qualname__}",
                "traceback": trace[-TRACEBACK_LIMIT:],
            },
        )


def masked(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def summarize(exc: BaseException) -> str:
    """One line for the log and the effect's last error: "ValueError: bad id"."""
    return masked(f"{type(exc).__name__}: {exc}")[:500]


# The claim this process is running, set by EffectTask: an effect offloaded while it runs (a
# follow-up) concerns the same user, and an email it sends has a Message-ID fixed per effect.
current_claim: ContextVar[Claim | None] = ContextVar("current_claim", default=None)


# insert(), claim() and _settle() run for every effect, so they are written in SQL. Both
# SQLite (3.35+) and PostgreSQL support INSERT and UPDATE ... RETURNING.


def insert(effect: Effect) -> Effect:
    """Write a new ``effect`` row, as ``effect.save()`` would, with no post_save signal (no
    receiver listens to the ledger's own rows).

    The ORM compiles its INSERT anew for every row, which cost as much as the rest of the
    write together: 0.57 -> 0.34 ms for a row in its own transaction on SQLite, 1.66 -> 1.40 ms
    on PostgreSQL (bench/NOTES.md). That cost is paid in the request that offloads.
    """
    values = [
        field.get_db_prep_save(field.pre_save(effect, add=True), connection) for field in _COLUMNS
    ]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection.vendor), values)
        effect.pk = cursor.fetchone()[0]
    effect._state.adding = False
    effect._state.db = connection.alias
    return effect


# Every field but the id, in the order of _insert_sql's values; each has a column.
_COLUMNS = [field for field in Effect._meta.concrete_fields if not field.primary_key]


@cache
def _insert_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    return "INSERT INTO {table} ({columns}) VALUES ({values}) RETURNING {pk}".format(
        table=quote(Effect._meta.db_table),
        columns=", ".join(quote(str(field.column)) for field in _COLUMNS),
        values=", ".join(["%s"] * len(_COLUMNS)),
        pk=quote(str(Effect._meta.pk.column)),
    )


# claim() and _settle() are one statement each, where the ORM needed a SELECT and an UPDATE.
CLAIM_SQL = """
    UPDATE {table}
    SET status = %(running)s, attempts = attempts + 1, started_at = %(now)s,
        leased_until = %(lease_end)s, retry_at = NULL, workers = {add_worker}
    {asynchronous_commit}
    WHERE id = %(id)s AND task = %(task)s AND (
        (status = %(pending)s AND (retry_at IS NULL OR retry_at <= %(now)s))
        OR (status = %(running)s AND (leased_until IS NULL OR leased_until < %(now)s))
    )
    RETURNING args, attempts, user_id, created_at
"""

# Appending one JSON value to a JSON list column, in the UPDATE that changes the row.
APPEND_JSON = {
    "sqlite": "json_insert({column}, '$[#]', json(%({param})s))",
    "postgresql": "{column} || jsonb_build_array(%({param})s::jsonb)",
}


def _append_json(column: str, param: str) -> str:
    return APPEND_JSON[connection.vendor].format(
        column=connection.ops.quote_name(column), param=param
    )


# On PostgreSQL a claim commits without waiting for its WAL record to reach the disk
# (synchronous_commit off for the claim's own transaction: an fsync less per effect, 0.42 ->
# 0.20 ms a claim here). Other sessions see it as soon as it commits, as before; only a crash
# of the database server can undo it, and then only the last fraction of a second's claims:
# effects in flight at the crash, which may run again (as the guarantees allow). Settles stay
# synchronous: "done" is durable. Not inside a caller's transaction, whose commit it would be.
ASYNCHRONOUS_COMMIT = {
    "postgresql": "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit",
}


def claim(effect_id: int, task: str, worker: str = "") -> Claim | None:
    """Take the effect for this attempt, or return None when it is not ours to run.

    Claimable: an effect of this ``task`` (a message naming another task's effect must not run
    this task's code on that effect's arguments) that is pending and due (not waiting for its
    retry time), or running past its lease: the attempt that held it stopped renewing it
    because its worker died or was cut off. ``worker`` (Celery's node name) is added to the
    effect's list of workers.
    """
    now = timezone.now()
    params = {
        "running": Effect.Status.RUNNING, "pending": Effect.Status.PENDING,
        "now": _db_time(now), "lease_end": _db_time(now + conf.lease),
        "id": effect_id, "task": task, "worker": json.dumps(worker or socket.gethostname()),
    }  # fmt: skip
    with connection.cursor() as cursor:
        asynchronous = (
            "" if connection.in_atomic_block else ASYNCHRONOUS_COMMIT.get(connection.vendor, "")
        )
        sql = CLAIM_SQL.format(
            table=_table(),
            add_worker=_append_json("workers", "worker"),
            asynchronous_commit=asynchronous,
        )
        cursor.execute(sql, params)
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


def _settle(claim: Claim, error: dict[str, str] | None = None, **fields: Any) -> bool:
    """UPDATE the row if this attempt still holds the claim; True when it did. ``error`` is
    added to the effect's list of errors."""
    params = {
        name: _FIELDS[name].get_db_prep_save(value, connection) for name, value in fields.items()
    }
    assignments = [f"{connection.ops.quote_name(name)} = %({name})s" for name in fields]
    if error is not None:
        assignments.append(f"errors = {_append_json('errors', 'error')}")
        params["error"] = json.dumps(error)
    sql = (
        f"UPDATE {_table()} SET {', '.join(assignments)}"
        " WHERE id = %(id)s AND status = %(running)s AND attempts = %(attempt)s"
    )
    params.update(id=claim.id, running=Effect.Status.RUNNING, attempt=claim.attempt)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount == 1)


# The Effect fields an attempt writes, by name.
_FIELDS = {field.name: field for field in Effect._meta.concrete_fields}


def _table() -> str:
    return connection.ops.quote_name(Effect._meta.db_table)


def _db_time(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _aware(value: str | datetime) -> datetime:
    """A timestamp read by raw SQL: SQLite gives naive UTC text, PostgreSQL an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def complete(claim: Claim, result: Any = None) -> bool:
    """Done; ``result`` is what a django.tasks task returned (JSON)."""
    return _settle(
        claim,
        status=Effect.Status.DONE, finished_at=timezone.now(), last_error="", result=result,
    )  # fmt: skip


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


def release(claim: Claim, error: Failure, retry_at: datetime) -> bool:
    """Back to pending after a transient failure, until ``retry_at``; the relay publishes it
    then (a retry waits in the ledger, not in a worker's memory)."""
    return _settle(
        claim, error.record, status=Effect.Status.PENDING, last_error=error.summary,
        retry_at=retry_at, published_at=None,
    )  # fmt: skip


def bury(claim: Claim, error: Failure) -> bool:
    """Dead-letter: no more attempts until someone replays it."""
    return _settle(
        claim, error.record, status=Effect.Status.DEAD, finished_at=timezone.now(),
        last_error=error.summary,
    )  # fmt: skip


def prune(days: int) -> int:
    """Delete done and skipped effects finished more than ``days`` days ago. Returns the count."""
    cutoff = timezone.now() - timedelta(days=days)
    ended = Effect.objects.filter(
        status__in=[Effect.Status.DONE, Effect.Status.SKIPPED], finished_at__lt=cutoff
    )
    deleted, _ = ended.delete()
    return deleted


def oldest_pending_seconds() -> float:
    """How long the pending effect that has waited longest since it was due (recorded, or its
    retry or run_after time) has waited; 0 when none is pending and due."""
    now = timezone.now()
    due = Effect.objects.filter(
        Q(retry_at__isnull=True) | Q(retry_at__lte=now), status=Effect.Status.PENDING
    )
    oldest = due.aggregate(t=Min(Coalesce("retry_at", "created_at")))["t"]
    return (now - oldest).total_seconds() if oldest else 0.0


def summary() -> dict[str, Any]:
    """Counts by status and the age of the oldest pending effect (`manage.py effects`)."""
    counts = dict.fromkeys(Effect.Status.values, 0)
    counts.update(Effect.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return {"counts": counts, "oldest_pending_seconds": oldest_pending_seconds()}
