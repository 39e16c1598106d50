"""Upkeep tasks, scheduled by beat (the project's CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from . import ledger, outbox
from .conf import conf


@shared_task(name="relay_effects", ignore_result=True)
def relay_effects() -> int:
    return outbox.relay()


@shared_task(name="prune_effects", ignore_result=True)
def prune_effects() -> int:
    return ledger.prune(conf.EFFECT_RETENTION_DAYS)
