"""Tasks used only by the benchmarks (the worker loads them with -I bench.tasks).

Both do the same tiny side effect: one Redis pipeline that counts the run of item ``n`` and
notes when it happened, so duplicates are visible and throughput can be timed.
"""

import time
from functools import cache

import redis
from celery import shared_task
from django.conf import settings
from django.tasks import task

from offload import EffectTask


@cache
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def mark(kind: str, n: int) -> None:
    client().pipeline(transaction=False).hincrby(f"bench:{kind}:hits", n, 1).hset(
        f"bench:{kind}:at", n, time.time()
    ).execute()


@shared_task(base=EffectTask, name="bench_effect")
def bench_effect(n: int) -> None:
    """An effect through the whole ledger path: claim, run, settle."""
    mark("effect", n)


@task
def bench_task(n: int) -> None:
    """The same effect through Django's Tasks API (offload's backend): enqueue()."""
    mark("effect", n)


# The same acknowledgement as an effect (EffectTask acknowledges late), so only the ledger differs.
@shared_task(name="bench_bare", ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def bench_bare(n: int) -> None:
    """A bare Celery task: no ledger, the same side effect."""
    mark("bare", n)
