"""Upkeep, scheduled by beat (the project's CELERY_BEAT_SCHEDULE). The relay is not a task: it
runs in every worker (relay.py), so that recovery waits on no queue and no other process."""

from celery import shared_task

from . import ledger
from .conf import conf


@shared_task(name="prune_effects", ignore_result=True)
def prune_effects() -> int:
    return ledger.prune(conf.EFFECT_RETENTION_DAYS)
