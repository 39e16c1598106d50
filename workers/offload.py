"""The one seam between signal receivers and Celery.

A receiver calls ``offload(task, user=..., **args)``. The effect is written to the ledger in the
caller's transaction and its id is published to Redis only once that transaction commits, so a
rolled-back change triggers nothing and a worker never sees a row that does not exist yet.
"""

import logging
from functools import partial

from celery import Task
from django.db import transaction

from .models import Effect

logger = logging.getLogger(__name__)


def offload(task: Task, *, user: int | None = None, **args) -> Effect:
    """Record that ``task`` must run with ``args`` (JSON-safe values: ids, strings, numbers).

    ``user`` is the id of the user the effect concerns, if any. Call it inside the transaction
    that makes the change (views run their writes in ``transaction.atomic()``).
    """
    effect = Effect.objects.create(task=task.name, args=args, user_id=user)
    transaction.on_commit(partial(publish, task, effect.pk))
    return effect


def publish(task: Task, effect_id: int) -> None:
    """Send the effect id to the broker; a broker failure never reaches the caller.

    No retry here: the request must stay fast while Redis is down, and the effect is safe in the
    ledger until it is published again (``python manage.py effects relay``).
    """
    try:
        # Only the id travels: the worker reads the arguments from the ledger, so no email
        # address or other personal data sits in Redis, Flower or the result store.
        task.apply_async((effect_id,), retry=False)
    except Exception as exc:  # noqa: BLE001 - any broker error leaves the effect pending
        logger.warning(
            "effect=%s task=%s publish failed, left pending: %s", effect_id, task.name, exc
        )
