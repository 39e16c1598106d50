"""python -m bench [--quick]: measure the offloading side by side, write docs/BENCHMARKS.md.

Each database gets a run of its own (a child process, since Django's settings are read once):
SQLite always, in a fresh file; PostgreSQL too when DATABASE_URL names one, in a fresh database
created on that server for the run and dropped after it. Every run starts its own private Redis,
SMTP sink and worker processes on this machine. Every comparison is interleaved (A, B, A, B,
...) so machine drift cancels. `--quick` runs tiny sizes into var/bench-quick/ and fails only if
the harness breaks or an effect is lost or duplicated; it never judges a timing.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

FULL = {"requests": 400, "enqueue": 2000, "throughput": 6000, "latency": 300, "burst": 10000}
QUICK = {"requests": 20, "enqueue": 100, "throughput": 300, "latency": 20, "burst": 500}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, no report")
    parser.add_argument("--database", help=argparse.SUPPRESS)  # a child run: sqlite or a URL
    parser.add_argument("--results", help=argparse.SUPPRESS)  # where a child writes its JSON
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.database:
        return measure(args.database, sizes, Path(args.results), quiet=args.quick)

    databases = {"SQLite": "sqlite"}
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://", "pgsql://")):
        databases["PostgreSQL"] = url
    out = ROOT / "var" / "bench-quick" if args.quick else ROOT / "docs"
    runs = {}
    for label, database in databases.items():
        print(f"== {label}", flush=True)
        results = ROOT / "var" / f"bench-{label.lower()}.json"
        results.unlink(missing_ok=True)
        command = [sys.executable, "-m", "bench", "--database", database, "--results", str(results)]
        code = subprocess.call([*command, *(["--quick"] if args.quick else [])], cwd=ROOT)
        if code:
            print(f"the {label} run failed (exit status {code})", file=sys.stderr)
            return code
        runs[label] = json.loads(results.read_text())

    from bench import report

    report.write(runs, out, full=not args.quick)
    print(report.table(runs))
    broken = any(
        run["lost"] or run["duplicated"]
        for results in runs.values()
        for run in [results["burst"], *results["throughput"].values()]
        if isinstance(run, dict)
    )
    return 1 if broken else 0


def measure(database: str, sizes: dict, results: Path, quiet: bool) -> int:
    """One run on one database, its results written to ``results`` as JSON."""
    work = ROOT / "var" / "bench"
    shutil.rmtree(work, ignore_errors=True)
    (work / "static").mkdir(parents=True)

    from devtools.localredis import LocalRedis

    with LocalRedis(directory=str(work)) as server, bench_database(database, work) as url:
        # Everything below (this process and the workers) runs with production settings and
        # a fast password hasher (bench/settings.py), the private Redis and a fresh database.
        os.environ.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            DEBUG="false",
            HTTPS="false",
            SECRET_KEY="bench-only-" + "x" * 50,
            EMAIL_URL="smtp://127.0.0.1:9",  # never used: bench/settings.py keeps email in memory
            REDIS_URL=server.url,
            DATABASE_URL=url,
            MEDIA_ROOT=str(work / "media"),
            STATIC_ROOT=str(work / "static"),
            ALLOWED_HOSTS="testserver,127.0.0.1",
            LOG_LEVEL="WARNING",
        )
        import django

        django.setup()
        from bench import measures

        measured = measures.run_all(sizes, work, print_progress=not quiet)
        measured["environment"] = environment(server)
        measured["sizes"] = sizes
        results.write_text(json.dumps(measured, default=str))
        # The workers are stopped; Django's own connection must go before the database does.
        from django.db import connections

        connections.close_all()
    return 0


@contextmanager
def bench_database(database: str, work: Path):
    """The DATABASE_URL of a fresh database for the run: a new SQLite file, or a database
    created on the PostgreSQL server that ``database`` names, dropped afterwards."""
    if database == "sqlite":
        yield f"sqlite:///{work / 'bench.sqlite3'}"
        return
    import psycopg

    name = f"offload_bench_{os.getpid()}"
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(database)
    # Persistent connections, as compose runs them (DATABASE_URL's conn_max_age).
    yield urlunsplit(parts._replace(path=f"/{name}", query="conn_max_age=60"))
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(server) -> dict:
    import redis
    from django.db import connection

    client = redis.Redis.from_url(server.url)
    rtts = []
    for _ in range(200):
        started = time.perf_counter()
        client.ping()
        rtts.append((time.perf_counter() - started) * 1e6)
    rtts.sort()
    if connection.vendor == "sqlite":
        database = "SQLite (WAL, synchronous=NORMAL, immediate transactions)"
    else:
        version = connection.cursor().connection.info.server_version // 10000
        database = f"PostgreSQL {version} (local, persistent connections)"
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": client.info("server")["redis_version"],
        "redis_rtt_us_p50": round(rtts[len(rtts) // 2], 1),
        "database": database,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
