"""Upkeep, scheduled by beat (the project's CELERY_BEAT_SCHEDULE). The relay is not a task: it
runs in every worker (relay.py), so that recovery waits on no queue and no other process."""

import logging

from celery import shared_task

from . import ledger
from .conf import conf

logger = logging.getLogger(__name__)


@shared_task(name="prune_effects", ignore_result=True)
def prune_effects() -> int:
    pruned = ledger.prune(conf.EFFECT_RETENTION_DAYS)
    logger.info("pruned %s effects ended more than %s days ago", pruned, conf.EFFECT_RETENTION_DAYS)
    return pruned
