"""Every benchmark keeps running: its toy size, end to end, writes its JSON (timings are
measured there, never asserted here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(module: str) -> dict:
    env = os.environ | {"FLWR_DISABLE_UPDATE_CHECK": "1"}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--toy"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads((ROOT / "benchmarks" / "results" / f"{module}.json").read_text())
    assert result["toy"]
    return result


def test_dp_step_benchmark_runs_at_toy_size():
    result = _run("dp_step")
    assert result["unit"] == "shopper"
    modes = {row["mode"]: row for row in result["rows"]}
    assert "error" not in modes["plain"] and "error" not in modes["ghost"]


@pytest.mark.integration
def test_federation_benchmark_runs_at_toy_size():
    [row] = _run("federation")["rows"]
    assert row["scenes"] == 2 and row["simulation_s"] > 0 and row["plain_loop_s"] > 0


@pytest.mark.deployment
def test_deployment_benchmark_runs_at_toy_size():
    result = _run("deployment")
    assert set(result) >= {"deployment", "simulation", "ratio"}
    assert result["deployment"]["client"]["train-s"] > 0  # released timings reached it


def test_empirical_audit_benchmark_runs_at_toy_size():
    result = _run("empirical_audit")
    assert {row["mechanism"] for row in result["rows"]} == {
        "real", "noise-off", "clipping-off", "seeded-noise", "example-unit"}
    assert all(row["seconds"] > 0 and row["canaries"] == 200 for row in result["rows"])
