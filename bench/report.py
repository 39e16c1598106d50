"""The benchmark report: a text table for the terminal, docs/BENCHMARKS.md and PNG plots."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OFFLOAD = "offload() (ledger + publish)"
PUBLISH = "publish_all(): the effect's message pushed"


def verdicts(r: dict, database: str) -> list[tuple[str, float, str, bool]]:
    """(what, measured, target, met) for every target of docs/design, from one run."""
    req = r["requests"]
    offload_p50 = req[OFFLOAD]["p50_ms"]
    tp = r["throughput"]
    lat = r["latency"]["effect"]
    burst = r["burst"]
    worker = tp["effect, 1 process"]["per_second"] / tp["bare, 1 process"]["per_second"]
    rows = [
        ("request p50: offload() / delay_on_commit", offload_p50 / req["delay_on_commit"]["p50_ms"], "<= 1.0x"),
        ("request p50: offload() / no receiver", offload_p50 / req["no receiver"]["p50_ms"], "<= 1.3x"),
        ("enqueue p50: publish_all() / raw LPUSH", r["enqueue"][PUBLISH]["ratio_p50"], "<= 2x"),
        ("worker: effects/s / bare Celery tasks/s, one process", worker, ">= 1.0x"),
    ]  # fmt: skip
    if database == "PostgreSQL":
        scaling = tp["effect, 2 processes"]["per_second"] / tp["effect, 1 process"]["per_second"]
        rows.append(("worker: effects/s, 2 processes / 1", scaling, ">= 1.6x"))
    rows += [
        ("latency commit -> done, p50 (ms)", lat["p50_ms"], "<= 2"),
        ("latency commit -> done, p99 (ms)", lat["p99_ms"], "<= 4"),
        ("burst: drain / (N / steady throughput)", burst["drain_ratio"], "<= 1.2x"),
        ("burst: lost + run twice", burst["lost"] + burst["duplicated"], "0"),
    ]
    return [(what, round(value, 3), target, met(value, target)) for what, value, target in rows]


def met(value: float, target: str) -> bool:
    bound = float(target.split()[-1].rstrip("x"))
    return value >= bound if target.startswith(">=") else value <= bound


def table(runs: dict) -> str:
    lines = [f"{'database':<11} {'measure':<54} {'measured':>9} {'target':>8}  met"]
    for database, r in runs.items():
        for what, value, target, ok in verdicts(r, database):
            lines.append(
                f"{database:<11} {what:<54} {value:>9} {target:>8}  {'yes' if ok else 'NO'}"
            )
    return "\n".join(lines)


def rows(section: dict, columns: list[str]) -> str:
    out = ["| variant | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in section.items():
        if isinstance(row, dict):
            out.append(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def section(database: str, r: dict, plots: str) -> str:
    b = r["burst"]
    tp = {k: v for k, v in r["throughput"].items() if isinstance(v, dict)}
    return f"""## {database}

{r["environment"]["database"]}.

### Request: `POST /api/users` (sign-up), {r["requests"]["no receiver"]["n"]} requests per variant

Timed as a WSGI server sees it: until the response is written (`p50_ms`, the target's
measure), and until it is closed (`with_after_response_p50_ms`), when Django sends
`request_finished` and offload publishes what the request committed. The receiver calls
`offload()` or, through Django's Tasks API, `enqueue()`.

{rows(r["requests"], ["p50_ms", "p99_ms", "mean_ms", "ratio_p50", "with_after_response_p50_ms"])}

![request latency]({plots}/requests.png)

### Enqueue: one effect, {r["enqueue"]["raw LPUSH"]["n"]} per variant (message: {r["enqueue"]["message_bytes"]} bytes)

{rows(r["enqueue"], ["p50_ms", "p99_ms", "mean_ms", "ratio_p50"])}

`publish_all()` is what runs after the commit; `offload() in a transaction` adds the ledger: BEGIN, the
INSERT, COMMIT and the publish. `enqueue() in a transaction` is the same effect through Django's
Tasks API on offload's backend: Django's validation of the task, the JSON round-trip check of the
arguments, the same row, and `task_enqueued` at the commit.

### Worker throughput (prefork pool; the queue filled first, then drained)

{rows(tp, ["n", "seconds", "per_second", "per_second_per_process", "lost", "duplicated"])}

![throughput]({plots}/throughput.png)

### Latency from commit to done, one at a time, one worker process

An effect (done: its ledger row's `finished_at`), and a bare Celery task published by
`delay_on_commit` (done: when it ran), interleaved.

{rows(r["latency"], ["n", "p50_ms", "p99_ms", "mean_ms"])}

![latency]({plots}/latency.png)

### Burst: {b["n"]:,} saves as fast as one producer can, two worker processes draining

| produced in | drained in | expected at steady throughput | ratio | peak queue depth | save p50 | save p99 | lost | run twice |
|---|---|---|---|---|---|---|---|---|
| {b["produce_seconds"]} s | {b["drain_seconds"]} s | {b["expected_seconds_at_steady_throughput"]} s | {b["drain_ratio"]}x | {b["peak_queue_depth"]} | {b["save_p50_ms"]} ms | {b["save_p99_ms"]} ms | {b["lost"]} | {b["duplicated"]} |

![burst]({plots}/burst.png)
"""


def write(runs: dict, out: Path, full: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = out / "bench"
    plots.mkdir(exist_ok=True)
    for database, r in runs.items():
        (plots / database.lower()).mkdir(exist_ok=True)
        plot(r, plots / database.lower())
    env = next(iter(runs.values()))["environment"]
    targets = "\n".join(
        f"| {database} | {what} | {value} | {target} | {'yes' if ok else '**no**'} |"
        for database, r in runs.items()
        for what, value, target, ok in verdicts(r, database)
    )
    notes = (Path(__file__).parent / "NOTES.md").read_text()
    sections = "\n".join(section(d, r, f"bench/{d.lower()}") for d, r in runs.items())
    text = f"""# Benchmarks

Written by `make bench` (`python -m bench`{"" if full else " --quick"}): one run per database, on this
machine. Every comparison is interleaved item by item (A, B, C, D, A, ...), so drift falls on all
variants alike, and every target is a ratio of two things measured side by side in the same run.

Environment: {env["cores"]} cores, Python {env["python"]}, Redis {env["redis"]} (private, on loopback;
PING round trip p50 {env["redis_rtt_us_p50"]} µs), `{env["platform"]}`. The benchmark logs at
WARNING, the workers at INFO as they ship (a line per effect attempt; Celery's received and
succeeded lines are off, for a bare task too). Password hashing MD5 (PBKDF2 would add ~260 ms to every
sign-up and hide the overhead).

## Targets

| database | measure | measured | target | met |
|---|---|---|---|---|
{targets}

{notes}
{sections}"""
    (out / ("BENCHMARKS.md" if full else "benchmarks.md")).write_text(text)
    slim = json.loads(json.dumps(runs, default=str))
    for r in slim.values():
        for name in ("requests", "enqueue"):
            for row in r[name].values():
                if isinstance(row, dict):
                    row.pop("samples_ms", None)
        for row in r["latency"].values():
            row.pop("samples_ms", None)
        r["burst"].pop("depth_series", None)
    (plots / "results.json").write_text(json.dumps(slim, indent=2))


def plot(r: dict, plots: Path) -> None:
    names = list(r["requests"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.boxplot([r["requests"][n]["samples_ms"] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_ylabel("ms until the response is sent")
    ax.set_title("Sign-up request latency by way of handling the welcome email")
    fig.tight_layout()
    fig.savefig(plots / "requests.png", dpi=100)
    plt.close(fig)

    tp = {k: v for k, v in r["throughput"].items() if isinstance(v, dict)}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(list(tp), [v["per_second"] for v in tp.values()], color=["#0b5fad", "#9aa5b1"] * 2)
    ax.set_ylabel("per second")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("Worker throughput: ledger effects vs bare Celery tasks")
    fig.tight_layout()
    fig.savefig(plots / "throughput.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for (name, row), color in zip(r["latency"].items(), ("#0b5fad", "#9aa5b1"), strict=True):
        ax.hist(row["samples_ms"], bins=40, color=color, alpha=0.7, label=name)
    ax.legend(fontsize=8)
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
