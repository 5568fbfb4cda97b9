"""The benchmark scripts still run (tiny sizes): the README's figures come from them.

Figures are not checked here (speed targets live in the scripts' output, never in timed
tests); only that each script runs to the end and prints its figure line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("script", "args", "expect"), [
    ("bench_decide.py", ["--patients", "4", "--repeat", "2"], "events/s (best of 2; median"),
    ("bench_decide.py", ["--patients", "2", "--mix", "hospital", "--fhir", "--repeat", "1"],
     "hospital mix, FHIR on"),
    ("bench_decide.py", ["--patients", "3", "--keep-outputs", "--profile"], "profiled"),
    ("bench_map.py", ["--messages", "40"], "msg/s"),
    ("bench_normalize.py", ["--messages", "40"], "ADT messages/s"),
])
def test_bench_script_runs(script: str, args: list[str], expect: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expect in done.stdout, done.stdout[-2000:]
