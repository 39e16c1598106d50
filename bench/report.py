"""The benchmark report: a text table for the terminal, docs/BENCHMARKS.md and PNG plots."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TARGETS = {
    "request": 1.15,  # offload() p50 / no receiver p50
    "enqueue": 2.0,  # publish p50 / raw LPUSH p50
    "throughput": 1500.0,  # effects/s per worker process
    "scaling": 0.85,  # 2 processes / (2 x 1 process)
    "latency_p50": 2.0,
    "latency_p99": 5.0,
    "drain": 1.1,
}


def verdicts(r: dict) -> list[tuple[str, str, str, bool]]:
    """(what, measured, target, met) for every design target."""
    req = r["requests"]["offload() (ledger + publish)"]["ratio_p50"]
    enq = r["enqueue"]["publish(): apply_async of the id"]["ratio_p50"]
    tp = r["throughput"]["effect, 1 process"]["per_second_per_process"]
    sc = r["throughput"]["scaling"]
    lat = r["latency"]
    burst = r["burst"]
    return [
        ("request overhead, offload() vs no receiver (p50)", f"{req:.2f}x", "<= 1.15x", req <= TARGETS["request"]),
        ("enqueue, publish vs raw LPUSH (p50)", f"{enq:.2f}x", "<= 2x", enq <= TARGETS["enqueue"]),
        ("worker throughput, effects/s per process", f"{tp:,.0f}", ">= 1,500", tp >= TARGETS["throughput"]),
        ("scaling, 2 processes vs 2 x 1", f"{sc:.2f}x", ">= 0.85x", sc >= TARGETS["scaling"]),
        ("latency commit -> done, p50", f"{lat['p50_ms']:.2f} ms", "<= 2 ms", lat["p50_ms"] <= TARGETS["latency_p50"]),
        ("latency commit -> done, p99", f"{lat['p99_ms']:.2f} ms", "<= 5 ms", lat["p99_ms"] <= TARGETS["latency_p99"]),
        ("burst drain vs N / steady throughput", f"{burst['drain_ratio']:.2f}x", "<= 1.1x", burst["drain_ratio"] <= TARGETS["drain"]),
        ("burst lost / duplicated", f"{burst['lost']} / {burst['duplicated']}", "0 / 0", not burst["lost"] and not burst["duplicated"]),
    ]  # fmt: skip


def table(r: dict) -> str:
    lines = [f"{'measure':<52} {'measured':>14} {'target':>10}  met"]
    for what, measured, target, met in verdicts(r):
        lines.append(f"{what:<52} {measured:>14} {target:>10}  {'yes' if met else 'NO'}")
    return "\n".join(lines)


def rows(section: dict, columns: list[str]) -> str:
    out = ["| variant | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in section.items():
        if isinstance(row, dict):
            out.append(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def write(r: dict, out: Path, full: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = out / "bench"
    plots.mkdir(exist_ok=True)
    plot(r, plots)
    env = r["environment"]
    verdict_rows = "\n".join(
        f"| {w} | {m} | {t} | {'yes' if ok else '**no**'} |" for w, m, t, ok in verdicts(r)
    )
    b = r["burst"]
    text = f"""# Benchmarks

Written by `make bench` (`python -m bench`{"" if full else " --quick"}). One run, on this machine; every comparison
is interleaved item by item (A, B, C, D, A, ...) so drift falls on all variants alike.

Environment: {env["cores"]} cores, Python {env["python"]}, Redis {env["redis"]} (private, on loopback;
PING round trip p50 {env["redis_rtt_us_p50"]} µs), {env["database"]}, `{env["platform"]}`. Logs at WARNING;
password hashing MD5 (PBKDF2 would add ~260 ms to every sign-up and hide the overhead).

## Targets

| measure | measured | target | met |
|---|---|---|---|
{verdict_rows}

## 1. Request overhead: `POST /api/users` (sign-up), {r["requests"]["no receiver"]["n"]} requests per variant

{rows(r["requests"], ["p50_ms", "p99_ms", "mean_ms", "ratio_p50"])}

![request latency](bench/requests.png)

## 2. Enqueue cost of one effect, {r["enqueue"]["raw LPUSH"]["n"]} per variant (message: {r["enqueue"]["message_bytes"]} bytes)

{rows(r["enqueue"], ["p50_ms", "p99_ms", "mean_ms", "ratio_p50"])}

`publish()` is what runs after commit; `offload() in a transaction` adds the ledger: BEGIN, the
INSERT, COMMIT, the publish and the `published_at` UPDATE.

## 3. Worker throughput (prefork pool; queue filled first, then drained)

{rows({k: v for k, v in r["throughput"].items() if isinstance(v, dict)}, ["n", "seconds", "per_second", "per_second_per_process", "lost", "duplicated"])}

Scaling from 1 to 2 processes (effects): {r["throughput"]["scaling"]}x of linear.

![throughput](bench/throughput.png)

## 4. Latency from commit to done, one effect at a time, one worker process

p50 {r["latency"]["p50_ms"]} ms, p99 {r["latency"]["p99_ms"]} ms, mean {r["latency"]["mean_ms"]} ms over {r["latency"]["n"]} effects.

![latency](bench/latency.png)

## 5. Burst: {b["n"]:,} saves as fast as one producer can, two worker processes draining

| produced in | drained in | expected at steady throughput | ratio | peak queue depth | save p50 | save p99 | lost | duplicated |
|---|---|---|---|---|---|---|---|---|
| {b["produce_seconds"]} s | {b["drain_seconds"]} s | {b["expected_seconds_at_steady_throughput"]} s | {b["drain_ratio"]}x | {b["peak_queue_depth"]} | {b["save_p50_ms"]} ms | {b["save_p99_ms"]} ms | {b["lost"]} | {b["duplicated"]} |

![burst](bench/burst.png)

## Why the unmet targets are not met, and what would move them

Profiles (cProfile) of the publish and of one effect, in-process and in a worker, on this
machine. The optimisations they led to are in place (commit "Make the effect path fast"):
kept database connections (Celery's Django fixup closed them after every task), claim and
settle as single `UPDATE ... RETURNING` statements (the ORM took two queries and ~10x the
time), task events off unless Flower watches (the "sent" event doubled every publish), one
Redis client per channel (kombu built a new `redis.Redis`, with ~170 callback entries, for
every publish), no Celery result for effects, and a precomputed `argsrepr`.

- **Request overhead.** One publish costs {r["enqueue"]["publish(): apply_async of the id"]["p50_ms"]} ms p50 here,
  {r["enqueue"]["publish(): apply_async of the id"]["ratio_p50"]}x a raw LPUSH of the same bytes. What is left is
  Celery's `send_task` path: routing, building the message, and a dozen config lookups through Django's lazy settings.
  That is {r["enqueue"]["publish(): apply_async of the id"]["p50_ms"] / r["requests"]["no receiver"]["p50_ms"]:.0%} of the
  {r["requests"]["no receiver"]["p50_ms"]} ms sign-up request, so no design that publishes inside the request meets
  1.15x here: the plain `delay_on_commit` measures {r["requests"]["delay_on_commit"]["ratio_p50"]}x. The ledger adds
  the INSERT and the `published_at` UPDATE on top, about
  {r["requests"]["offload() (ledger + publish)"]["p50_ms"] - r["requests"]["delay_on_commit"]["p50_ms"]:.2f} ms more than
  `delay_on_commit`. Next steps: publish after the response is sent (a `request_finished` hook), and batch the
  `published_at` writes; or a hand-built message pushed with one LPUSH (about 1.3x a raw LPUSH), at the cost of
  owning Celery's message format.
- **Worker throughput.** Bare Celery tasks, measured in the same run, reach
  {r["throughput"]["bare, 1 process"]["per_second"]:,.0f}/s with one process on this 2-core VM, so Celery's own
  per-task cycle is about {1000 / r["throughput"]["bare, 1 process"]["per_second"]:.1f} ms. The 1,500/s target is above
  what Celery does here without any ledger. An effect adds two committed SQLite writes (the claim and the settle):
  531 µs for the whole task in-process (measured separately with the same code), about 1 ms in a worker that shares the 2 cores with its parent process and
  Redis. Next steps: claim several messages in one statement when they arrive in a burst; PostgreSQL, whose
  writers do not queue on one file lock; and a threads pool for I/O-bound effects.
- **Latency.** The path is publish, then Redis, the worker's event loop, the pool's pipe to a child, and two SQLite
  commits: {r["latency"]["p50_ms"]} ms p50, where a bare task's cycle alone is about 1 ms.
- **Burst drain.** One producer made the 10,000 saves in {b["produce_seconds"]} s while the workers drained. The
  drain ends {b["drain_seconds"] - b["produce_seconds"]:.1f} s after the last save. The ratio against N / steady
  throughput includes the producer itself competing for the 2 cores and the SQLite write lock.
"""
    (out / ("BENCHMARKS.md" if full else "benchmarks.md")).write_text(text)
    slim = json.loads(json.dumps(r, default=str))
    for section in ("requests", "enqueue"):
        for row in slim[section].values():
            if isinstance(row, dict):
                row.pop("samples_ms", None)
    slim["latency"].pop("samples_ms", None)
    slim["burst"].pop("depth_series", None)
    (plots / "results.json").write_text(json.dumps(slim, indent=2))


def plot(r: dict, plots: Path) -> None:
    names = list(r["requests"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.boxplot([r["requests"][n]["samples_ms"] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_ylabel("ms per sign-up request")
    ax.set_title("Request latency by way of handling the welcome email")
    fig.tight_layout()
    fig.savefig(plots / "requests.png", dpi=100)
    plt.close(fig)

    tp = {k: v for k, v in r["throughput"].items() if isinstance(v, dict)}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(list(tp), [v["per_second"] for v in tp.values()], color=["#0b5fad", "#9aa5b1"] * 2)
    ax.axhline(TARGETS["throughput"], color="#b3261e", linestyle="--", label="1,500/s per process")
    ax.set_ylabel("per second")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)
    ax.set_title("Worker throughput: ledger effects vs bare Celery tasks")
    fig.tight_layout()
    fig.savefig(plots / "throughput.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(r["latency"]["samples_ms"], bins=40, color="#0b5fad")
    ax.set_xlabel("ms from commit to done")
    ax.set_title("Latency at low load")
    fig.tight_layout()
    fig.savefig(plots / "latency.png", dpi=100)
    plt.close(fig)

    series = r["burst"]["depth_series"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([t for t, _ in series], [d for _, d in series], color="#0b5fad")
    ax.set_xlabel("seconds since the first save")
    ax.set_ylabel("messages waiting")
    ax.set_title(f"Burst of {r['burst']['n']:,} saves: queue depth")
    fig.tight_layout()
    fig.savefig(plots / "burst.png", dpi=100)
    plt.close(fig)
