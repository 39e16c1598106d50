"""The relay: publishes again what the broker never had, lost, or gave to a worker that died.

It runs in every worker, in a thread started when the worker is ready; one worker at a time
relays (a short lock in Redis), every EFFECT_RELAY_INTERVAL seconds. ``manage.py effects relay``
runs it once by hand. Each run:

1. Checks the broker's marker, a key it keeps in Redis. If the key is gone, Redis lost its data
   (restarted empty, flushed, or failed over to an empty replica): every pending effect is
   published again at once, and then the marker is set again.
2. Publishes what is due:
   - pending and unpublished (its publish failed: the broker was down or refused it),
     EFFECT_RELAY_GRACE after it was recorded;
   - pending and waiting for a retry whose time has come;
   - running past its lease: the attempt's worker died or was cut off (once per lost lease);
   - pending and due, published (or recorded, with its publish to follow the commit) more than
     EFFECT_REPUBLISH_AFTER ago, while its queue is empty and no worker holds its message
     unacknowledged: the message never arrived or was lost (the process died between its
     commit and its publish; a worker killed between taking it from the queue and recording it
     as unacknowledged; a Redis that lost its last second). A backlog never looks lost, since
     its queue is not empty.

A run that finds nothing to do logs nothing.
"""

import base64
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from celery import current_app
from django.db import close_old_connections, connection
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import messages
from .base import EffectTask
from .conf import conf
from .models import Effect

logger = logging.getLogger(__name__)

BATCH = 500


def marker_key() -> str:
    """The key whose absence means Redis lost its data (one per Celery app on a Redis)."""
    return f"offload:{current_app.main or 'celery'}:broker-marker"


def leader_key() -> str:
    return f"offload:{current_app.main or 'celery'}:relay-leader"


def relay(channel: Any = None) -> int:
    """Publish again what the broker may never have had or may have lost. Returns the count.

    ``channel`` is a kombu Redis channel of the broker; without one, the run opens its own.
    """
    if channel is None:
        with broker_channel() as channel:
            return relay(channel)
    now = timezone.now()  # before reading the broker: what is published after it is not lost
    # The marker is set again only once everything pending has been published: a run cut
    # short by a failing publish leaves the next run to go on.
    everything = not channel.client.exists(marker_key())
    tasks = effect_tasks()
    # An effect of a task this worker does not know (another version, mid-deploy) waits for
    # a worker that does: it stays pending, counted in the metrics.
    due = due_for_relay(now, *broker_state(channel, tasks), everything=everything)
    due = due.filter(task__in=sorted(tasks))
    published, complete = 0, True
    # Each batch is a fresh query: what was published is no longer due.
    while batch := list(due.values_list("task", "pk", "queue")[:BATCH]):
        try:
            messages.push(batch)
        except Exception as exc:  # noqa: BLE001 - the broker failed: the next run goes on
            logger.warning("relay could not publish: %s: %s", type(exc).__name__, exc)
            complete = False
            break
        mark_published([pk for _, pk, _ in batch], now)
        published += len(batch)
    if everything and complete:
        channel.client.set(marker_key(), "1")
    if published and everything:
        logger.warning(
            "relay published %s pending effect(s) again: Redis had lost its data (or is new)",
            published,
        )
    elif published:
        logger.info("relay published %s effect(s) again", published)
    return published


def mark_published(ids: list[int], at: datetime) -> None:
    """Record the publish, except where an attempt already claimed the effect and sent it back
    to wait for its retry (its ``published_at`` must stay empty for the relay to find it)."""
    retry_due = Q(retry_at__isnull=True) | Q(retry_at__lte=at)
    Effect.objects.filter(retry_due, pk__in=ids).update(published_at=at)


def due_for_relay(
    now: datetime,
    empty_queues: set[str],
    empty_queue_tasks: set[str],
    held: set[int],
    everything: bool = False,
) -> QuerySet[Effect]:
    """Effects whose message may never arrive, oldest first (see the module's docstring)."""
    pending = Q(status=Effect.Status.PENDING)
    retry_due = Q(retry_at__isnull=True) | Q(retry_at__lte=now)
    if everything:  # but what this run published already
        not_yet = Q(published_at__isnull=True) | Q(published_at__lt=now)
        return Effect.objects.filter(pending & retry_due & not_yet).order_by("created_at")
    unpublished = (
        pending
        & Q(published_at__isnull=True)
        & (Q(retry_at__isnull=True, created_at__lt=now - conf.relay_grace) | Q(retry_at__lte=now))
    )
    abandoned = (
        Q(status=Effect.Status.RUNNING)
        & (Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        & (
            Q(published_at__isnull=True)
            | Q(published_at__lt=F("leased_until"))
            | Q(published_at__lt=now - conf.republish_after)
        )
    )
    # Its queue: the one it was sent to, else its task's route.
    queue_empty = Q(queue="", task__in=sorted(empty_queue_tasks)) | Q(
        queue__in=sorted(empty_queues)
    )
    lost = (
        pending
        & retry_due
        & Q(published_at__lt=now - conf.republish_after)
        & queue_empty
        & ~Q(pk__in=sorted(held))
    )
    return Effect.objects.filter(unpublished | abandoned | lost).order_by("created_at")


def effect_tasks() -> dict[str, str]:
    """{name: queue} of the effect tasks this process knows."""
    return {
        name: queue_of(name) for name, task in current_app.tasks.items()
        if isinstance(task, EffectTask)
    }  # fmt: skip


def broker_state(channel: Any, tasks: dict[str, str]) -> tuple[set[str], set[str], set[int]]:
    """The queues with no message waiting (the effect tasks' and the app's), the effect tasks
    whose queue is one of them, and the effects whose message a worker holds unacknowledged
    (prefetched or running; a dead worker's come back after the visibility timeout)."""
    # A pending effect sent to a queue of its own (a django.tasks queue_name) counts too,
    # declared or not.
    named = Effect.objects.filter(status=Effect.Status.PENDING).exclude(queue="")
    named_queues = set(named.values_list("queue", flat=True).distinct())
    queues = sorted(set(tasks.values()) | set(current_app.amqp.queues) | named_queues)
    with channel.client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue)
        pipe.hvals(channel.unacked_key)
        *lengths, unacked = pipe.execute()
    empty = {queue for queue, length in zip(queues, lengths, strict=True) if not length}
    return empty, {name for name, queue in tasks.items() if queue in empty}, effect_ids(unacked)


def effect_ids(unacked: list[bytes]) -> set[int]:
    """The effect ids in kombu's unacknowledged entries ([message, exchange, routing key])."""
    ids = (effect_id_of(json.loads(entry)[0]) for entry in unacked)
    return {effect_id for effect_id in ids if effect_id is not None}


def effect_id_of(message: Any) -> int | None:
    """The effect id a kombu message carries (its only argument), or None for another one."""
    try:
        args = json.loads(base64.b64decode(message["body"]))[0]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return args[0] if args and type(args[0]) is int else None


def queue_of(task_name: str) -> str:
    return str(current_app.amqp.router.route({}, task_name)["queue"].name)


@contextmanager
def broker_channel() -> Iterator[Any]:
    """A kombu Redis channel of the broker (``.client`` is its redis-py client)."""
    with current_app.connection_for_write() as conn:
        yield conn.default_channel


class RelayThread(threading.Thread):
    """Runs the relay every EFFECT_RELAY_INTERVAL seconds in a worker, when this worker holds
    the relay lock (one worker at a time; the lock lapses within three intervals of its
    holder's death)."""

    def __init__(self) -> None:
        super().__init__(name="offload-relay", daemon=True)
        self.stopping = threading.Event()
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.failing = False

    def run(self) -> None:
        while not self.stopping.wait(conf.EFFECT_RELAY_INTERVAL):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any outage
                if not self.failing:  # one line per outage, not one per tick
                    logger.warning("relay paused: %s: %s", type(exc).__name__, exc)
                self.failing = True
                connection.close()  # a connection an error interrupted is not reused
            else:
                if self.failing:
                    logger.info("relay resumed")
                self.failing = False
        connection.close()

    def tick(self) -> None:
        close_old_connections()
        with broker_channel() as channel:
            if self.leads(channel.client):
                relay(channel)

    def leads(self, client: Any) -> bool:
        ttl = int(conf.EFFECT_RELAY_INTERVAL * 3000)
        key = leader_key()
        mine = client.set(key, self.me, nx=True, px=ttl)
        if mine or client.get(key) == self.me.encode():
            client.pexpire(key, ttl)
            return True
        return False


_thread: RelayThread | None = None


def start_in_worker(**kwargs: Any) -> None:
    """Connected to Celery's worker_ready signal (offload/apps.py)."""
    global _thread
    _thread = RelayThread()
    _thread.start()


def stop_in_worker(**kwargs: Any) -> None:
    """Connected to Celery's worker_shutting_down signal."""
    if _thread is not None:
        _thread.stopping.set()
