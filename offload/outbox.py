"""The way into the ledger and out to the broker: offload(), and the publish after commit.

A receiver calls ``offload(task, **kwargs)`` (or ``task.offload(**kwargs)``). The effect is
written to the ledger in the caller's transaction and its id is published to the broker only
once that transaction commits, so a rolled-back change triggers nothing and a worker never sees
a row that does not exist yet. In a web request the publish waits until the response has gone
to the client (Django's request_finished), so the client never waits on the broker, and all
the effects of one request go in one round trip. If the publish fails, or the process dies
before it, the effect is still in the ledger and the relay (relay.py) publishes it.

Nothing is written back after a publish: a row is recorded with ``published_at`` set, the
promise of the publish that follows its commit, and only a failed publish clears it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextvars import ContextVar
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import ledger, messages
from .ledger import current_claim, summarize
from .log import log_step
from .messages import Outgoing
from .models import Effect

if TYPE_CHECKING:
    from .base import EffectTask

logger = logging.getLogger(__name__)


def offload(task: EffectTask, /, **kwargs: Any) -> Effect:
    """Record that ``task`` must run with ``kwargs`` (JSON-safe values: ids, strings, numbers),
    and publish it once the current transaction commits.

    The effect concerns the user named by the task's ``user_arg`` argument (``user_id`` unless
    the task says otherwise); an effect offloaded by a running effect (a follow-up) concerns
    the same user as its parent. Call it inside the transaction that makes the change.
    """
    key = coalescing_key(task.name, kwargs) if task.coalesce else ""
    if key and (twin := pending_twin(key)):
        return twin
    return record(task.name, kwargs, user_id=user_of(task.user_arg, kwargs), key=key)


def record(
    task_name: str,
    args: dict[str, Any],
    *,
    user_id: int | None,
    key: str = "",
    queue: str = "",
    not_before: datetime | None = None,
) -> Effect:
    """Write the effect's row in the current transaction; publish it once that commits, or,
    ``not_before`` a later time, leave it to the relay to publish then (the row waits in the
    ledger, so a deferred effect survives any restart). ``queue``: the Celery queue, if not
    the task's route."""
    now = timezone.now()
    deferred = not_before is not None and not_before > now
    effect = ledger.insert(Effect(
        task=task_name, args=args, user_id=user_id, key=key, queue=queue, created_at=now,
        published_at=None if deferred else now, retry_at=not_before if deferred else None,
    ))  # fmt: skip
    if not deferred:
        # robust: should anything in it raise all the same, Django logs it and the request
        # goes on.
        publish = partial(publish_new, (task_name, effect.pk, queue))
        transaction.on_commit(publish, robust=True)
    return effect


def user_of(user_arg: str | None, kwargs: dict[str, Any]) -> int | None:
    """The user an effect concerns: its ``user_arg`` argument, else a running parent's."""
    if not user_arg:  # the task names no user
        return None
    user: int | None = kwargs.get(user_arg)
    if user is None and (parent := current_claim.get()):
        user = parent.user_id
    return user


def coalescing_key(task_name: str, args: Any) -> str:
    payload = json.dumps([task_name, args], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def pending_twin(key: str) -> Effect | None:
    """The same work, recorded and not yet started, which will therefore see our change.

    The row is locked until our transaction ends, so a worker cannot claim it (and read the
    data) before our change is committed. A twin already locked by another request is skipped
    (SKIP LOCKED, PostgreSQL): we record our own effect rather than wait. On SQLite the
    immediate transaction already holds the database's write lock, which has the same effect.
    """
    with transaction.atomic(savepoint=False):
        return (
            Effect.objects.select_for_update(skip_locked=True)
            .filter(key=key, status=Effect.Status.PENDING, attempts=0, retry_at__isnull=True)
            .first()
        )


# The effects committed during the current web request, published once its response is sent;
# None outside a request (a worker, a command, a shell), where they are published at commit.
_after_response: ContextVar[list[Outgoing] | None] = ContextVar(
    "offload_after_response", default=None
)


def hold_until_response(**kwargs: Any) -> None:
    """Connected to Django's request_started signal (apps.py)."""
    _after_response.set([])


def publish_after_response(**kwargs: Any) -> None:
    """Connected to request_finished, which Django sends once the server has written the
    response (on WSGI, when it closes it; on ASGI, after the last body message)."""
    held = _after_response.get()
    _after_response.set(None)
    if held:
        try:
            publish_all(held)
        except Exception:  # the response is sent; the relay publishes what this left
            logger.exception("effects %s: publish after the response failed", held)


def publish_new(effect: Outgoing) -> None:
    """Publish an effect whose transaction committed: after the response in a web request,
    else now."""
    held = _after_response.get()
    if held is not None:
        held.append(effect)
    else:
        publish_all([effect])


def publish_all(effects: list[Outgoing]) -> bool:
    """Send the messages of effects ``(task name, effect id, queue)`` to the broker in one
    round trip. Nothing here may fail the caller (the change is committed; a client that
    retried would be told it exists), so a failure is logged and the effects are left to the
    relay.

    No retry here: the request must stay fast while the broker is down, and the effects are
    safe in the ledger until the relay publishes them. Only the id travels: the worker reads
    the arguments from the ledger, so no email address or other personal data sits in the
    broker, Flower or a result store.
    """
    try:
        messages.push(effects)
    except Exception as exc:  # noqa: BLE001 - any broker error leaves the effects to the relay
        for name, effect_id, _ in effects:
            log_step(
                logger, logging.WARNING, effect=effect_id, task=name, step="publish_failed",
                error=f"{summarize(exc)} (the relay will publish it)",
            )  # fmt: skip
        _unpublished([effect_id for _, effect_id, _ in effects])
        return False
    for name, effect_id, _ in effects:
        log_step(logger, logging.INFO, effect=effect_id, task=name, step="published")
    return True


def _unpublished(ids: list[int]) -> None:
    """Clear the promise of a publish that failed, so the relay publishes the effects once
    EFFECT_RELAY_GRACE has passed since they were recorded."""
    try:
        Effect.objects.filter(
            pk__in=ids, status=Effect.Status.PENDING, attempts=0, retry_at__isnull=True
        ).update(published_at=None)
    except DatabaseError as exc:  # "database is locked", a connection lost since the commit
        # Left as published: the relay takes them for lost messages once their queue is
        # empty, EFFECT_REPUBLISH_AFTER after they were recorded.
        logger.warning(
            "effects %s: publish failure not recorded: %s: %s", ids, type(exc).__name__, exc
        )


@transaction.atomic
def replay(effects: QuerySet[Effect]) -> int:
    """Give dead letters a fresh set of attempts and publish them once this commits."""
    ids = list(effects.filter(status=Effect.Status.DEAD).values_list("task", "pk", "queue"))
    Effect.objects.filter(pk__in=[pk for _, pk, _ in ids]).update(
        status=Effect.Status.PENDING, attempts=0, finished_at=None, published_at=timezone.now()
    )
    transaction.on_commit(partial(publish_all, ids), robust=True)
    return len(ids)
