"""The one seam between signal receivers and Celery.

A receiver calls ``offload(task, user=..., **args)``. The effect is written to the ledger in the
caller's transaction and its id is published to Redis only once that transaction commits, so a
rolled-back change triggers nothing and a worker never sees a row that does not exist yet. If
the publish fails, or the process dies before it, the effect is still in the ledger and the relay
(``relay()`` in workers/ledger.py) publishes it.
"""

import hashlib
import json
import logging
from functools import partial

from celery import Task
from django.db import transaction
from django.utils import timezone

from .models import Effect

logger = logging.getLogger(__name__)


def offload(task: Task, *, user: int | None = None, **args) -> Effect:
    """Record that ``task`` must run with ``args`` (JSON-safe values: ids, strings, numbers).

    ``user`` is the id of the user the effect concerns, if any. Call it inside the transaction
    that makes the change (views run their writes in ``transaction.atomic()``).
    """
    key = coalescing_key(task, args) if getattr(task, "coalesce", False) else ""
    if key and (twin := pending_twin(key)):
        return twin
    effect = Effect.objects.create(task=task.name, args=args, user_id=user, key=key)
    transaction.on_commit(partial(publish_new, task, effect.pk))
    return effect


def coalescing_key(task: Task, args: dict) -> str:
    payload = json.dumps([task.name, args], sort_keys=True, separators=(",", ":"))
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


def publish_new(task: Task, effect_id: int) -> None:
    if publish(task, effect_id):
        Effect.objects.filter(pk=effect_id).update(published_at=timezone.now())
        logger.info("effect=%s task=%s step=published", effect_id, task.name)


def publish(task: Task, effect_id: int) -> bool:
    """Send the effect id to the broker; a broker failure never reaches the caller.

    No retry here: the request must stay fast while Redis is down, and the effect is safe in the
    ledger until the relay publishes it.
    """
    try:
        # Only the id travels: the worker reads the arguments from the ledger, so no email
        # address or other personal data sits in Redis, Flower or the result store.
        # argsrepr given: Celery would otherwise saferepr() the arguments (~24% of a publish).
        task.apply_async((effect_id,), retry=False, argsrepr=f"({effect_id},)", kwargsrepr="{}")
    except Exception as exc:  # noqa: BLE001 - any broker error leaves the effect to the relay
        logger.warning(
            "effect=%s task=%s step=publish_failed error=%r (the relay will publish it)",
            effect_id,
            task.name,
            str(exc),
        )
        return False
    return True
