"""GET /metrics: the ledger and the queues in Prometheus' text format, behind a bearer token.

Everything is read at scrape time from the database and the broker, so every web process
reports the same numbers (no per-process counters to add up).
"""

import hmac
from collections.abc import Iterator
from typing import Any

from celery import current_app as app
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from kombu.exceptions import ChannelError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import ledger
from .conf import conf
from .models import Effect


class LedgerCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        effects = GaugeMetricFamily(
            "effects", "Effects in the ledger, by status and task.", labels=["status", "task"]
        )
        rows = Effect.objects.values_list("status", "task").annotate(n=Count("pk")).order_by()
        for status, task, count in rows:
            effects.add_metric([status, task], count)
        yield effects

        yield GaugeMetricFamily(
            "effects_oldest_pending_seconds",
            "Age of the oldest pending effect (0 when none is pending).",
            value=ledger.oldest_pending_seconds(),
        )
        unpublished = Effect.objects.filter(
            status=Effect.Status.PENDING, published_at__isnull=True, retry_at__isnull=True
        )
        yield GaugeMetricFamily(
            "effects_unpublished",
            "Pending effects that never reached the broker (failed publishes awaiting the relay).",
            value=unpublished.count(),
        )
        yield GaugeMetricFamily(
            "effects_waiting_for_retry",
            "Pending effects whose last attempt failed, waiting for their retry time.",
            value=Effect.objects.filter(
                status=Effect.Status.PENDING, retry_at__isnull=False
            ).count(),
        )
        yield GaugeMetricFamily(
            "effects_dead_letters",
            "Effects that ran out of attempts and wait for a replay.",
            value=Effect.objects.filter(status=Effect.Status.DEAD).count(),
        )
        yield from self.queues()

    def queues(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "celery_queue_depth", "Messages waiting per queue.", labels=["queue"]
        )
        try:
            with app.connection_for_read() as connection:
                channel = connection.default_channel
                for queue in queue_names():
                    depth.add_metric([queue], queue_depth(channel, queue))
            up = 1
        except Exception:  # noqa: BLE001 - the broker being down is itself the measurement
            up = 0
        yield GaugeMetricFamily(
            "celery_broker_up", "1 when the broker answered this scrape.", value=up
        )
        if up:
            yield depth


def queue_names() -> list[str]:
    """The queues Celery is configured with (CELERY_TASK_QUEUES, and the default queue)."""
    configured = {queue.name for queue in app.conf.task_queues or ()}
    return sorted(configured | {app.conf.task_default_queue})


def queue_depth(channel: Any, queue: str) -> int:
    try:
        return int(channel.queue_declare(queue, passive=True).message_count)
    except ChannelError:  # Redis keeps no key for an empty queue
        return 0


registry = CollectorRegistry(auto_describe=False)
registry.register(LedgerCollector())


def metrics(request: HttpRequest) -> HttpResponse:
    expected = f"Bearer {conf.METRICS_TOKEN}"
    given = request.headers.get("Authorization", "")
    if not conf.METRICS_TOKEN or not hmac.compare_digest(given.encode(), expected.encode()):
        response = HttpResponse(
            "Unauthorized: send Authorization: Bearer <METRICS_TOKEN>\n", status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
