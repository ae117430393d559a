"""The DP-step benchmark must keep running: its toy size, end to end, writes its JSON
(timings are measured there, never asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dp_step_benchmark_runs_at_toy_size():
    done = subprocess.run([sys.executable, "-m", "benchmarks.dp_step", "--toy"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((ROOT / "benchmarks" / "results" / "dp_step.json").read_text())
    assert result["unit"] == "shopper" and result["toy"]
    modes = {row["mode"]: row for row in result["rows"]}
    assert "error" not in modes["plain"] and "error" not in modes["ghost"]
