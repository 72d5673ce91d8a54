"""benchmarks/multitask.py still runs: a short pass, its output checked for the figures its
tables are made of (slow: it starts a process per way, each importing torch), and its
refusal of a folder too small for its warm-up."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_multitask_benchmark_reports_every_way():
    out = _run("multitask.py", "--images", "32", "--rounds", "1")
    for way in ("separate", "group", "multitask"):
        row = re.search(rf"^\s*{way}\s+([\d.]+)\s+([\d.]+)x\s+(\d+)\s+(\d+) MiB$", out, re.M)
        assert row, out
        assert float(row.group(1)) > 0 and int(row.group(3)) > 0 and int(row.group(4)) > 0
    assert "32 answers" in out and "96 answers" in out  # one way per task, or one per head
    assert re.search(r"multitask / separate, round by round: median [\d.]+x", out), out


def test_multitask_benchmark_refuses_too_few_images():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "multitask.py"), "--images", "8"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "at least 32" in done.stderr
