"""python -m bench [--quick]: measure the offloading side by side, write docs/BENCHMARKS.md.

Starts its own private Redis, SMTP sink and worker processes on this machine, with a fresh
SQLite database. Every comparison is interleaved (A, B, A, B, ...) so machine drift cancels.
`--quick` runs tiny sizes into var/bench-quick/ and fails only if the harness breaks or an
effect is lost or duplicated; it never judges a timing.
"""

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FULL = {"requests": 400, "enqueue": 2000, "throughput": 6000, "latency": 300, "burst": 10000}
QUICK = {"requests": 20, "enqueue": 100, "throughput": 300, "latency": 20, "burst": 500}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, no report")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    out = ROOT / "var" / "bench-quick" if args.quick else ROOT / "docs"
    work = ROOT / "var" / "bench"
    shutil.rmtree(work, ignore_errors=True)
    (work / "static").mkdir(parents=True)

    from devtools.localredis import LocalRedis

    with LocalRedis(directory=str(work)) as server:
        # Everything below (this process and the workers) runs with production settings
        # (DEBUG off: Django's debug cursor doubles every SQLite query), the private Redis, a
        # fresh SQLite file and a fast password hasher: PBKDF2's ~260 ms would drown the overhead.
        os.environ.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            DEBUG="false",
            HTTPS="false",
            SECRET_KEY="bench-only-" + "x" * 50,
            REDIS_URL=server.url,
            DATABASE_URL=f"sqlite:///{work / 'bench.sqlite3'}",
            MEDIA_ROOT=str(work / "media"),
            STATIC_ROOT=str(work / "static"),
            PASSWORD_HASHERS="django.contrib.auth.hashers.MD5PasswordHasher",
            ALLOWED_HOSTS="testserver,127.0.0.1",
            LOG_LEVEL="WARNING",
        )
        import django

        django.setup()
        from bench import measures, report

        results = measures.run_all(sizes, work, print_progress=not args.quick)
        results["environment"] = environment(server)
        results["sizes"] = sizes
        report.write(results, out, full=not args.quick)
        print(report.table(results))
        runs = [
            results["burst"],
            *(v for v in results["throughput"].values() if isinstance(v, dict)),
        ]
        broken = any(run["lost"] or run["duplicated"] for run in runs)
        return 1 if broken else 0


def environment(server) -> dict:
    import redis

    client = redis.Redis.from_url(server.url)
    rtts = []
    for _ in range(200):
        started = time.perf_counter()
        client.ping()
        rtts.append((time.perf_counter() - started) * 1e6)
    rtts.sort()
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": client.info("server")["redis_version"],
        "redis_rtt_us_p50": round(rtts[len(rtts) // 2], 1),
        "database": "SQLite (WAL, immediate transactions)",
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
