"""The benchmark harness as a smoke test: `python -m bench --quick` runs end to end and loses or
duplicates nothing. It judges no timing (that is the report's job)."""

import json
import os
import subprocess
import sys

import pytest

from devtools.processes import ROOT

pytestmark = pytest.mark.integration


def test_the_benchmark_harness_runs_and_loses_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [results] = json.loads(
        (ROOT / "var" / "bench-quick" / "bench" / "results.json").read_text()
    ).values()  # SQLite only: no DATABASE_URL
    runs = [results["burst"], *(v for v in results["throughput"].values() if isinstance(v, dict))]
    assert all(run["lost"] == 0 and run["duplicated"] == 0 for run in runs)
    assert results["burst"]["n"] == results["sizes"]["burst"]
    for plot in ("requests", "throughput", "latency", "burst"):
        assert (
            ROOT / "var" / "bench-quick" / "bench" / "sqlite" / f"{plot}.png"
        ).stat().st_size > 1000
    assert "offload() / delay_on_commit" in result.stdout
