"""Running a second Django project of tests/ (tests/sample, tests/tasksapi) in processes of its
own: its commands, its SQLite file read directly, its Celery worker. The test process keeps
this project's settings; the other project's are only ever loaded by its own processes."""

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from devtools.processes import ROOT, Service


def django(env: dict, *args: str) -> str:
    """Run `python -m django ARGS` in the project of ``env``; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"django {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def query(database: str, sql: str, *params) -> list[tuple]:
    """Read a project's SQLite file directly, read-only."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20)) as db:
        return db.execute(sql, params).fetchall()


def start_worker(app: str, env: dict, log_path: Path, queue: str, name: str) -> Service:
    """`celery -A app worker`, one pool process, on ``queue``."""
    argv = [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "--without-mingle", "--without-gossip", "--concurrency=1", "-Q", queue,
        "-n", f"{name}-{os.getpid()}@%h", "--loglevel=INFO",
    ]  # fmt: skip
    return Service(argv, env, log_path, lambda s: b" ready." in s.log_path.read_bytes()).start()
