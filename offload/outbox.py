"""The way into the ledger and out to the broker: offload(), and the publish after commit.

A receiver calls ``offload(task, **kwargs)`` (or ``task.offload(**kwargs)``). The effect is
written to the ledger in the caller's transaction and its id is published to the broker only
once that transaction commits, so a rolled-back change triggers nothing and a worker never sees
a row that does not exist yet. If the publish fails, or the process dies before it, the effect
is still in the ledger and the relay (relay.py) publishes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from celery import Task, current_app
from django.db import DatabaseError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .ledger import current_claim
from .log import log_step
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
    key = coalescing_key(task, kwargs) if task.coalesce else ""
    if key and (twin := pending_twin(key)):
        return twin
    effect = Effect.objects.create(
        task=task.name, args=kwargs, user_id=_user_of(task, kwargs), key=key
    )
    # robust: should anything in it raise all the same, Django logs it and the request goes on.
    transaction.on_commit(partial(publish_new, task, effect.pk), robust=True)
    return effect


def _user_of(task: EffectTask, kwargs: dict[str, Any]) -> int | None:
    if not task.user_arg:  # the task names no user
        return None
    user: int | None = kwargs.get(task.user_arg)
    if user is None and (parent := current_claim.get()):
        user = parent.user_id
    return user


def coalescing_key(task: Task[..., Any], kwargs: dict[str, Any]) -> str:
    payload = json.dumps([task.name, kwargs], sort_keys=True, separators=(",", ":"))
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
            .filter(key=key, status=Effect.Status.PENDING, attempts=0)
            .first()
        )


def publish_new(task: Task[..., Any], effect_id: int) -> None:
    """Publish an effect whose transaction committed. Nothing here may fail the request that
    committed it (the change is made; a client that retried would be told it exists): an
    error is logged and the relay finishes the job."""
    if not publish(task, effect_id):
        return
    try:
        # Unless a worker was quicker, failed, and sent it back to wait for a retry.
        Effect.objects.filter(pk=effect_id, retry_at__isnull=True).update(
            published_at=timezone.now()
        )
    except DatabaseError as exc:  # "database is locked", a connection lost since the commit
        log_step(
            logger, logging.WARNING, effect=effect_id, task=task.name, step="published",
            error=f"{type(exc).__name__}: {exc} (not recorded: the relay may publish it again,"
            " which the claim makes harmless)",
        )  # fmt: skip
        return
    log_step(logger, logging.INFO, effect=effect_id, task=task.name, step="published")


def publish(task: Task[..., Any], effect_id: int) -> bool:
    """Send the effect id to the broker; a broker failure never reaches the caller.

    No retry here: the request must stay fast while the broker is down, and the effect is safe
    in the ledger until the relay publishes it.
    """
    try:
        # Only the id travels: the worker reads the arguments from the ledger, so no email
        # address or other personal data sits in the broker, Flower or a result store.
        # argsrepr given: Celery would otherwise saferepr() the arguments on every publish.
        # No time limits in the message: Celery would copy the publisher's (EFFECT_TIME_LIMIT
        # as the web process read it) and the worker would obey them over its own.
        task.apply_async(  # type: ignore[call-arg]  # celery-types lacks argsrepr, kwargsrepr
            (effect_id,), retry=False, argsrepr=f"({effect_id},)", kwargsrepr="{}",
            time_limit=None, soft_time_limit=None,  # type: ignore[arg-type]  # None: unset
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any broker error leaves the effect to the relay
        log_step(
            logger, logging.WARNING, effect=effect_id, task=task.name, step="publish_failed",
            error=f"{type(exc).__name__}: {exc} (the relay will publish it)",
        )  # fmt: skip
        return False
    return True


@transaction.atomic
def replay(effects: QuerySet[Effect]) -> int:
    """Give dead letters a fresh set of attempts and publish them once this commits."""
    ids = list(effects.filter(status=Effect.Status.DEAD).values_list("pk", "task"))
    Effect.objects.filter(pk__in=[pk for pk, _ in ids]).update(
        status=Effect.Status.PENDING, attempts=0, finished_at=None, published_at=None
    )
    for pk, name in ids:
        transaction.on_commit(partial(publish_new, current_app.tasks[name], pk), robust=True)
    return len(ids)
