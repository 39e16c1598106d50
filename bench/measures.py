"""The five measurements. Each returns plain numbers; report.py turns them into a table and plots.

Times are wall-clock on this machine. Comparisons are interleaved item by item, in a rotating
order, so drift and warm-up fall on every variant alike.
"""

import json
import os
import statistics
import threading
import time
from functools import partial
from pathlib import Path

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.db.models import Max, Min
from django.db.models.signals import post_save
from django.test import override_settings
from django.utils import timezone

from bench.tasks import bench_bare, bench_effect, bench_task
from devtools.localredis import free_port
from devtools.processes import start_worker, wait_for
from devtools.wsgi import InProcessServer
from notifications import effects, receivers
from offload import messages
from offload.models import Effect
from offload.outbox import offload, publish_all
from offload.relay import marker_key

User = get_user_model()


def run_all(sizes: dict, work: Path, print_progress: bool = True) -> dict:
    say = print if print_progress else (lambda *a, **k: None)
    call_command("migrate", verbosity=0)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    # The relay's marker, as a relay sets it once everything pending was published: this Redis
    # keeps its data for the whole run. Without it, the first worker's relay takes the private
    # Redis for one that lost its data and publishes every pending effect a second time (the
    # copies do nothing, but a queue filled for a throughput run would count double).
    broker.set(marker_key(), "1")
    results = {}
    say("1/5 request overhead ...", flush=True)
    results["requests"] = request_overhead(sizes["requests"])
    say("2/5 enqueue cost ...", flush=True)
    results["enqueue"] = enqueue_cost(sizes["enqueue"], broker)
    # The sign-ups' welcome emails and the enqueued messages must not run in the worker runs.
    Effect.objects.all().delete()
    broker.delete(*settings.EFFECT_QUEUES)
    say("3/5 worker throughput ...", flush=True)
    results["throughput"] = throughput(sizes["throughput"], broker, work)
    say("4/5 latency ...", flush=True)
    results["latency"] = latency(sizes["latency"], broker, work)
    say("5/5 burst ...", flush=True)
    steady = results["throughput"]["effect, 2 processes"]["per_second"]
    results["burst"] = burst(sizes["burst"], broker, work, steady)
    return results


def summary(samples: list[float]) -> dict:
    """p50 / p99 / mean of samples in seconds, reported in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "n": len(ms),
        "p50_ms": round(cuts[49], 3),
        "p99_ms": round(cuts[98], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "samples_ms": ms,
    }


def interleaved(variants: dict, rounds: int, warmup: int = 5) -> dict:
    """Run each variant once per round, in a rotating order; returns {name: summary}."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds + warmup):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            elapsed = variants[name](i)
            if i >= warmup:
                times[name].append(elapsed)
    return {name: summary(values) for name, values in times.items()}


# --- 1. request overhead -----------------------------------------------------------------------


def request_overhead(rounds: int) -> dict:
    """POST /api/users with four ways of handling the new user's welcome email."""
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
            return "250 OK"

    sink = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    sink.start()
    smtp = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": sink.port},
        }
    }

    def synchronous(sender, instance, created, raw=False, **kwargs):
        if created and not raw:
            effects.welcome_email(instance.pk).send()  # the work itself, in the request

    def on_commit_delay(sender, instance, created, raw=False, **kwargs):
        if created and not raw:  # Celery's delay_on_commit: publish after commit, no ledger
            transaction.on_commit(partial(bench_bare.delay, instance.pk))

    def offloaded(sender, instance, created, raw=False, **kwargs):
        if created and not raw:
            bench_effect.offload(n=instance.pk)

    def enqueued(sender, instance, created, raw=False, **kwargs):
        if created and not raw:  # Django's Tasks API on offload's backend
            bench_task.enqueue(n=instance.pk)

    receivers_by_variant = {
        "no receiver": None,
        "synchronous receiver (SMTP)": synchronous,
        "delay_on_commit": on_commit_delay,
        "offload() (ledger + publish)": offloaded,
        "enqueue() (django.tasks, offload's backend)": enqueued,
    }
    variants = list(receivers_by_variant)
    server = InProcessServer()
    closed: dict[str, list[float]] = {name: [] for name in receivers_by_variant}

    def sign_up(name: str, index: int) -> float:
        if receiver := receivers_by_variant[name]:
            post_save.connect(receiver, sender=User, dispatch_uid="bench")
        body = json.dumps(
            {
                "username": f"u{variants.index(name)}-{index}",
                "email": "b@example.com",
                "password": "pw-bench-1234",
            }
        )
        started = time.perf_counter()
        status, response = server.post("/api/users", body)
        sent = time.perf_counter() - started
        response.close()  # request_finished: the work after the response
        done = time.perf_counter() - started
        post_save.disconnect(sender=User, dispatch_uid="bench")
        assert status == 201, status
        closed[name].append(done)
        return sent

    # The product's own receiver is swapped in and out with the others.
    post_save.disconnect(sender=User, dispatch_uid="welcome_new_user")
    try:
        with override_settings(MAILERS=smtp):
            results = interleaved(
                {name: partial(sign_up, name) for name in receivers_by_variant}, rounds
            )
    finally:
        post_save.connect(receivers.welcome_new_user, sender=User, dispatch_uid="welcome_new_user")
        sink.stop()
    base = results["no receiver"]["p50_ms"]
    for name, row in results.items():
        row["ratio_p50"] = round(row["p50_ms"] / base, 3)
        # The first five are the warm-up, as in interleaved().
        row["with_after_response_p50_ms"] = summary(closed[name][5:])["p50_ms"]
    return results


# --- 2. enqueue cost ---------------------------------------------------------------------------


def enqueue_cost(rounds: int, broker: redis.Redis) -> dict:
    """One effect's enqueue against a raw LPUSH of the very same message bytes."""
    queue, payload = messages.message(bench_effect.name, 0)  # the exact message offload sends

    def raw_lpush(i):
        started = time.perf_counter()
        broker.lpush("bench:raw", payload)
        return time.perf_counter() - started

    def publish_only(i):
        started = time.perf_counter()
        publish_all([(bench_effect.name, i, "")])
        return time.perf_counter() - started

    def celery_apply_async(i):
        started = time.perf_counter()
        bench_bare.apply_async((i,))
        return time.perf_counter() - started

    def offload_in_transaction(i):
        started = time.perf_counter()
        with transaction.atomic():
            offload(bench_effect, n=i)
        return time.perf_counter() - started

    def enqueue_in_transaction(i):
        started = time.perf_counter()
        with transaction.atomic():
            bench_task.enqueue(n=i)
        return time.perf_counter() - started

    def delay_on_commit_in_transaction(i):
        started = time.perf_counter()
        with transaction.atomic():
            transaction.on_commit(partial(bench_bare.delay, i))
        return time.perf_counter() - started

    results = interleaved(
        {
            "raw LPUSH": raw_lpush,
            "publish_all(): the effect's message pushed": publish_only,
            "Celery's apply_async, for comparison": celery_apply_async,
            "delay_on_commit in a transaction": delay_on_commit_in_transaction,
            "offload() in a transaction": offload_in_transaction,
            "enqueue() in a transaction (django.tasks)": enqueue_in_transaction,
        },
        rounds,
        warmup=20,
    )
    broker.delete("bench:raw", queue)
    Effect.objects.filter(task__in=[bench_effect.name, bench_task.module_path]).delete()
    base = results["raw LPUSH"]["p50_ms"]
    for row in results.values():
        row["ratio_p50"] = round(row["p50_ms"] / base, 3)
    results["message_bytes"] = len(payload)
    return results


# --- 3. worker throughput ----------------------------------------------------------------------


def reset(broker: redis.Redis) -> None:
    broker.delete(*[f"bench:{k}:{f}" for k in ("effect", "bare") for f in ("hits", "at")])


def counted(broker: redis.Redis, kind: str, n: int) -> dict:
    hits = [int(v) for v in broker.hvals(f"bench:{kind}:hits")]
    times = [float(v) for v in broker.hvals(f"bench:{kind}:at")]
    return {
        "lost": n - len(hits),
        "duplicated": sum(1 for h in hits if h > 1),
        "first": min(times, default=0.0),
        "last": max(times, default=0.0),
    }


def drained(broker: redis.Redis, kind: str, n: int) -> bool:
    return broker.hlen(f"bench:{kind}:hits") >= n


def fill(kind: str, n: int) -> None:
    """N messages in the queue: effects recorded and published as offload() does it (the row
    carries its published_at, so the relay leaves them alone), or bare tasks."""
    if kind == "effect":
        now = timezone.now()
        rows = Effect.objects.bulk_create(
            Effect(task=bench_effect.name, args={"n": i}, created_at=now, published_at=now)
            for i in range(n)
        )
        for start in range(0, n, 500):
            messages.push([(bench_effect.name, row.pk, "") for row in rows[start : start + 500]])
    else:
        for i in range(n):
            bench_bare.apply_async((i,))


def throughput(n: int, broker: redis.Redis, work: Path) -> dict:
    """Fill the queue while no worker runs, then time one worker draining it."""
    env = worker_env()
    results = {}
    for processes in (1, 2):
        for kind in ("effect", "bare"):  # side by side, in the same run
            reset(broker)
            fill(kind, n)
            worker = start_worker(
                env, work / f"worker-{kind}-{processes}.log", f"bench-{kind}", processes,
                *WORKER_ARGS,
            )  # fmt: skip
            try:
                wait_for(partial(drained, broker, kind, n), timeout=180, what="the queue to drain")
            finally:
                worker.stop()
            seen = counted(broker, kind, n)
            elapsed = seen["last"] - seen["first"]
            results[f"{kind}, {processes} process{'es' if processes > 1 else ''}"] = {
                "n": n,
                "seconds": round(elapsed, 3),
                "per_second": round(n / elapsed, 1) if elapsed else 0.0,
                "per_second_per_process": round(n / elapsed / processes, 1) if elapsed else 0.0,
                "lost": seen["lost"],
                "duplicated": seen["duplicated"],
            }
            Effect.objects.filter(task=bench_effect.name).delete()
    one, two = results["effect, 1 process"], results["effect, 2 processes"]
    results["scaling"] = round(two["per_second"] / (2 * one["per_second"]), 3)
    return results


# The benchmark's tasks, and the log level the workers ship with (Procfile, compose): one line
# per attempt of an effect; Celery's received/succeeded lines are off (project/settings.py).
WORKER_ARGS = ("-I", "bench.tasks", "--loglevel=INFO")


def worker_env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


# --- 4. latency --------------------------------------------------------------------------------


def latency(n: int, broker: redis.Redis, work: Path) -> dict:
    """Commit to done, one at a time (low load), with one worker process: an effect, and beside
    it a bare task published by delay_on_commit (Celery's own floor on this machine)."""

    def effect(i: int) -> float:
        with transaction.atomic():
            recorded = offload(bench_effect, n=i)
            committed = time.time()  # the commit and the publish follow at once
        done = wait_for(
            lambda: (
                Effect.objects.filter(pk=recorded.pk, status="done")
                .values_list("finished_at", flat=True)
                .first()
            ),
            timeout=10,
            what="the effect",
        )
        return done.timestamp() - committed

    def bare(i: int) -> float:
        with transaction.atomic():
            transaction.on_commit(partial(bench_bare.delay, i))
            committed = time.time()
        done = wait_for(lambda: broker.hget("bench:bare:at", i), timeout=10, what="the task")
        return float(done) - committed

    reset(broker)  # the throughput runs marked the same item numbers
    worker = start_worker(worker_env(), work / "worker-latency.log", "bench-lat", 1, *WORKER_ARGS)
    try:
        results = interleaved({"effect": effect, "bare Celery task": bare}, n, warmup=10)
    finally:
        worker.stop()
    Effect.objects.filter(task=bench_effect.name).delete()
    reset(broker)
    return results


# --- 5. burst ----------------------------------------------------------------------------------


def burst(n: int, broker: redis.Redis, work: Path, steady_per_second: float) -> dict:
    """N saves as fast as one producer can, while two worker processes drain."""
    reset(broker)
    worker = start_worker(worker_env(), work / "worker-burst.log", "bench-burst", 2, *WORKER_ARGS)
    depth = {"peak": 0, "series": []}
    stop = threading.Event()

    def sample_depth():
        sampler = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        while not stop.is_set():
            current = sampler.llen("records")
            depth["peak"] = max(depth["peak"], current)
            depth["series"].append((time.time(), current))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample_depth, daemon=True)
    saves = []
    try:
        sampler.start()
        started = time.time()
        for i in range(n):
            began = time.perf_counter()
            with transaction.atomic():
                offload(bench_effect, n=i)
            saves.append(time.perf_counter() - began)
        produced = time.time()
        wait_for(
            lambda: broker.hlen("bench:effect:hits") >= n, timeout=300, what="the burst to drain"
        )
    finally:
        stop.set()
        sampler.join()
        worker.stop()
    seen = counted(broker, "effect", n)
    ledger = Effect.objects.filter(task=bench_effect.name)
    finished = ledger.aggregate(first=Min("started_at"), last=Max("finished_at"))
    drain = finished["last"].timestamp() - started
    expected = n / steady_per_second
    result = {
        "n": n,
        "produce_seconds": round(produced - started, 3),
        "drain_seconds": round(drain, 3),
        "expected_seconds_at_steady_throughput": round(expected, 3),
        "drain_ratio": round(drain / expected, 3),
        "peak_queue_depth": depth["peak"],
        "save_p50_ms": summary(saves)["p50_ms"],
        "save_p99_ms": summary(saves)["p99_ms"],
        "lost": max(n - ledger.filter(status="done").count(), seen["lost"]),
        "duplicated": seen["duplicated"],
        "depth_series": [(round(t - started, 3), d) for t, d in depth["series"]],
    }
    ledger.delete()
    return result
