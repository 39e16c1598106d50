"""State changes of an effect row, each a single conditional UPDATE so that two workers
holding the same message can never both run it."""

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from .models import Effect


def claim(effect_id: int) -> Effect | None:
    """Take the effect for this attempt, or return None when it is not ours to run.

    Claimable: pending, or running past its lease (the worker that held it died; the lease is
    longer than the task time limit, so a live attempt is never taken over).
    """
    now = timezone.now()
    claimable = Q(status=Effect.Status.PENDING) | Q(
        status=Effect.Status.RUNNING, started_at__lt=now - settings.EFFECT_LEASE
    )
    claimed = Effect.objects.filter(claimable, pk=effect_id).update(
        status=Effect.Status.RUNNING, attempts=F("attempts") + 1, started_at=now
    )
    if claimed != 1:
        return None
    return Effect.objects.get(pk=effect_id)


def _settle(effect: Effect, **fields) -> bool:
    # Only the attempt that holds the claim may settle it.
    return bool(
        Effect.objects.filter(
            pk=effect.pk, status=Effect.Status.RUNNING, attempts=effect.attempts
        ).update(**fields)
    )


def complete(effect: Effect) -> bool:
    return _settle(effect, status=Effect.Status.DONE, finished_at=timezone.now(), last_error="")


def release(effect: Effect, error: str) -> bool:
    """Back to pending after a transient failure; a retry message is on its way."""
    return _settle(effect, status=Effect.Status.PENDING, last_error=error)


def bury(effect: Effect, error: str) -> bool:
    """Dead-letter: no more attempts until someone replays it."""
    return _settle(effect, status=Effect.Status.DEAD, finished_at=timezone.now(), last_error=error)
