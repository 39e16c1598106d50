"""GET /metrics: Prometheus' text format, behind a bearer token. Every name starts with
``offload_``.

Two kinds of numbers, so that every web process reports the same ones:
- state, read from the ledger and the broker at scrape time (gauges): effects by status, the
  oldest pending one, queue depths, whether the broker answered;
- what happened, counted by the workers as each attempt ends (counters and histograms):
  effects finished by task and outcome, retries, attempt durations, recording-to-done latency.
  They are kept in one Redis hash on the broker (HINCRBY, written by each process every
  second: see Tally), so they survive the daily prune and add up across workers and hosts.
  Redis losing its data resets them, which Prometheus' ``rate()`` and ``increase()`` take as
  a restart.
"""

import hmac
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from celery import current_app as app
from celery.signals import worker_process_shutdown
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from kombu.exceptions import ChannelError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import ledger, messages
from .conf import conf
from .ledger import Claim
from .models import Effect

logger = logging.getLogger(__name__)

PREFIX = "offload_"
KEY = "offload:metrics"  # the Redis hash of the counters: "kind|task|..." -> count
# Upper bounds, in seconds: an attempt's run time (an email takes tens of milliseconds to
# seconds, EFFECT_TIME_LIMIT is 60), and the time from recording to done (milliseconds when
# idle, minutes behind a backlog).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS = (
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600
)  # fmt: skip
# A bound may be added; one removed is folded into the next above it when read (counters()),
# so that no count ever goes down.
# How an attempt can end: "retry" leaves its effect to another attempt, the others end it.
OUTCOMES = ("done", "skipped", "retry", "dead")


def observe(claim: Claim, outcome: str, seconds: float) -> None:
    """Count an attempt that ended in ``outcome`` (done, skipped, retry or dead) after running
    ``seconds``. In memory: this process's counts reach Redis within FLUSH_SECONDS."""
    counts = {_field("duration", claim.task, _bucket(seconds, DURATION_BUCKETS)): 1}
    sums = {_field("duration_sum", claim.task): seconds}
    if outcome == "retry":
        counts[_field("retries", claim.task)] = 1
    else:
        counts[_field("finished", claim.task, outcome)] = 1
    if outcome == "done":
        latency = max(0.0, (timezone.now() - claim.created_at).total_seconds())
        counts[_field("latency", claim.task, _bucket(latency, LATENCY_BUCKETS))] = 1
        sums[_field("latency_sum", claim.task)] = latency
    tally.add(counts, sums)


class Tally:
    """This process's counts on their way to Redis.

    An attempt only adds to memory (a microsecond, where a round trip to Redis would add a
    tenth of a millisecond to every effect); a thread of the process writes what gathered every
    FLUSH_SECONDS, in one MULTI/EXEC (a scrape sees all of an attempt's counts or none), and the
    worker process writes the rest as it shuts down. A write that fails keeps its counts for the
    next one, so a Redis outage delays them. A process killed outright loses what it had not
    written: its last second, or all it held while Redis did not answer.
    """

    FLUSH_SECONDS = 1.0

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)  # a child counts only its own

    def _forget(self) -> None:
        self._lock = threading.Lock()  # guards the counts
        self._flushing = threading.Lock()  # one write at a time: the thread's, or the last
        self._counts: Counter[str] = Counter()
        self._sums: defaultdict[str, float] = defaultdict(float)
        self._thread: threading.Thread | None = None
        self._failing = False

    def add(self, counts: dict[str, int], sums: dict[str, float]) -> None:
        with self._lock:
            if self._thread is None:  # the first count of this process
                self._thread = threading.Thread(target=self._run, name="offload-metrics")
                self._thread.daemon = True
                self._thread.start()
            self._counts.update(counts)
            for field, total in sums.items():
                self._sums[field] += total

    def _run(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                counts, sums = self._counts, self._sums
                self._counts, self._sums = Counter(), defaultdict(float)
            if not counts:
                return
            try:
                with messages.client(os.getpid()).pipeline(transaction=True) as pipe:
                    for field, count in counts.items():
                        pipe.hincrby(KEY, field, count)
                    for field, total in sums.items():
                        pipe.hincrbyfloat(KEY, field, total)
                    pipe.execute()
            except Exception as exc:  # noqa: BLE001 - whatever the broker raised: try again
                if not self._failing:  # once per outage, not once a second
                    logger.warning("metrics not written, kept until Redis answers: %s", exc)
                self._failing = True
                self.add(counts, sums)
            else:
                if self._failing:
                    logger.info("metrics written again")
                self._failing = False


tally = Tally()


@worker_process_shutdown.connect
def _flush_at_shutdown(**kwargs: Any) -> None:
    tally.flush()


def _field(*parts: object) -> str:
    return "|".join(map(str, parts))


def _bucket(value: float, bounds: tuple[float, ...]) -> str:
    """The smallest bound that holds ``value`` ("+Inf" past the last)."""
    return next((_le(bound) for bound in bounds if value <= bound), "+Inf")


def _le(bound: float) -> str:
    return str(float(bound))


class LedgerCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        effects = GaugeMetricFamily(
            PREFIX + "effects",
            "Effects in the ledger now, by status and task (done and skipped ones until pruned).",
            labels=["status", "task"],
        )
        rows = Effect.objects.values_list("status", "task").annotate(n=Count("pk")).order_by()
        for status, task, count in rows:
            effects.add_metric([status, task], count)
        yield effects

        yield GaugeMetricFamily(
            PREFIX + "oldest_pending_seconds",
            "Longest wait of a pending effect since it was due: recorded, or its retry or"
            " run_after time come (0 when none is pending and due).",
            value=ledger.oldest_pending_seconds(),
        )
        unpublished = Effect.objects.filter(
            status=Effect.Status.PENDING, published_at__isnull=True, retry_at__isnull=True
        )
        yield GaugeMetricFamily(
            PREFIX + "effects_unpublished",
            "Pending effects that never reached the broker (failed publishes awaiting the relay).",
            value=unpublished.count(),
        )
        waiting = Effect.objects.filter(status=Effect.Status.PENDING, retry_at__isnull=False)
        yield GaugeMetricFamily(
            PREFIX + "effects_waiting_for_retry",
            "Pending effects whose last attempt failed, waiting for their retry time.",
            value=waiting.filter(attempts__gt=0).count(),
        )
        yield GaugeMetricFamily(
            PREFIX + "effects_scheduled",
            "Pending effects never attempted, waiting for their time (django.tasks run_after).",
            value=waiting.filter(attempts=0, retry_at__gt=timezone.now()).count(),
        )
        yield GaugeMetricFamily(
            PREFIX + "dead_letters",
            "Effects that ran out of attempts and wait for a replay.",
            value=Effect.objects.filter(status=Effect.Status.DEAD).count(),
        )
        yield from self.broker()

    def broker(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            PREFIX + "queue_depth", "Messages waiting per queue.", labels=["queue"]
        )
        try:
            with app.connection_for_read() as connection:
                channel: Any = connection.default_channel  # kombu's Redis channel (untyped)
                for queue in queue_names():
                    depth.add_metric([queue], queue_depth(channel, queue))
                counts = channel.client.hgetall(KEY)
            up = 1
        except Exception:  # noqa: BLE001 - the broker being down is itself the measurement
            up = 0
        yield GaugeMetricFamily(
            PREFIX + "broker_up", "1 when the broker answered this scrape.", value=up
        )
        if up:
            yield depth
            yield from counters({key.decode(): value.decode() for key, value in counts.items()})


def counters(stored: dict[str, str]) -> Iterator[Metric]:
    """The counters and histograms from the Redis hash that ``observe`` fills."""
    finished = CounterMetricFamily(
        PREFIX + "effects_finished",
        "Effects that ended, by task and outcome (done, skipped, dead).",
        labels=["task", "outcome"],
    )
    retries = CounterMetricFamily(
        PREFIX + "effect_retries",
        "Attempts that failed and left their effect to be tried again.",
        labels=["task"],
    )
    buckets: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    sums: dict[str, dict[str, float]] = defaultdict(dict)
    for field, value in sorted(stored.items()):
        kind, task, *rest = field.split("|")
        if kind == "finished":
            finished.add_metric([task, rest[0]], int(value))
        elif kind == "retries":
            retries.add_metric([task], int(value))
        elif kind.endswith("_sum"):
            sums[kind.removesuffix("_sum")][task] = float(value)
        else:
            bounds = DURATION_BUCKETS if kind == "duration" else LATENCY_BUCKETS
            le = _bucket(float(rest[0]), bounds)  # itself, unless no longer a bound
            buckets[kind][task][le] = buckets[kind][task].get(le, 0) + int(value)
    yield finished
    yield retries
    for kind, bounds, help_text in (
        ("duration", DURATION_BUCKETS, "Run time of attempts, by task, whatever their outcome."),
        ("latency", LATENCY_BUCKETS, "From an effect's recording (in the transaction that "
         "caused it) to its done, by task."),
    ):  # fmt: skip
        histogram = HistogramMetricFamily(
            PREFIX + f"effect_{kind}_seconds", help_text, labels=["task"]
        )
        for task, counts in sorted(buckets[kind].items()):
            cumulative, running = [], 0
            for bound in [*map(_le, bounds), "+Inf"]:
                running += counts.get(bound, 0)
                cumulative.append((bound, running))
            histogram.add_metric([task], cumulative, sum_value=sums[kind].get(task, 0.0))
        yield histogram


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
