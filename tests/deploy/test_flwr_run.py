"""`flwr run .` as a new Flower user runs it: Flower's default local simulation (a managed
SuperLink with two simulated SuperNodes), a config that names no scenes, no num-nodes.
The ServerApp must find its two nodes and train every round, not report an empty run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedscene.deploy.loopback import free_port

pytestmark = pytest.mark.deployment
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _kill_local_superlink(home: Path) -> None:
    """The managed SuperLink runs detached; its command line names its log under `home`."""
    found = subprocess.run(["pgrep", "-f", str(home / "local-superlink")], capture_output=True,
                           text=True)
    for pid in found.stdout.split():  # it starts its own session: take its whole group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def test_flwr_run_finds_the_local_simulation_s_nodes_and_trains_every_round(tmp_path):
    home = tmp_path / "flwr-home"
    out = tmp_path / "out"
    config = tmp_path / "run.toml"
    config.write_text('[data]\nsource = "embedded"\n[federation]\nrounds = 2\n'
                      '[simulation]\nbootstrap_samples = 50\n')
    env = os.environ | {"FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1",
                        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
                        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
    run_config = f'config-path="{config}" out-dir="{out}"'
    try:
        done = subprocess.run([str(BIN / "flwr"), "run", str(REPO), "--stream",
                               "--run-config", run_config], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        _kill_local_superlink(home)
    log = (done.stdout + done.stderr)[-3000:]
    record = out / "federation.json"
    assert record.exists(), log
    trained = json.loads(record.read_text())["trained"]
    assert {row["round"] for row in trained} == {1, 2}, log
    assert len({row["scene"] for row in trained}) == 2, log  # both simulated SuperNodes
