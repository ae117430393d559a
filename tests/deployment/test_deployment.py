"""Real `flower-superlink` and `flower-supernode` processes over loopback with TLS and
SuperNode authentication, driven by `fedscene deploy` material and `flwr run`.

Every process is started in its own session and its whole process group is killed when
the test ends, whether it passed or failed (SuperNodes spawn SuperExec and ClientApp
processes that outlive a signal to the SuperNode alone).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fedscene.common.data.sources import embedded_path
from fedscene.common.ledger import read_ledger
from fedscene.simulations.cli import main
from fedscene.simulations.deploy import (
    connection_toml,
    coordinator_commands,
    make_certificates,
    make_partner_key,
    partner_command,
)

pytestmark = pytest.mark.deployment
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PARTNERS = {"p1": "Spain", "p2": "Belgium", "p3": "Portugal"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Starts processes in new sessions and kills their process groups on close."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env, self.started = root, env, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=self.root, env=self.env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((process, log))
        return process

    def stop(self, process: subprocess.Popen) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=10)
                os.killpg(process.pid, signal.SIGKILL)  # children left in the group
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue

    def close(self) -> None:
        for process, log in reversed(self.started):
            self.stop(process)
            log.close()


@pytest.fixture()
def federation(tmp_path):
    """A SuperLink with TLS and node auth, three registered partners, one rogue key."""
    certs = make_certificates(tmp_path / "certs", ["localhost", "127.0.0.1"])
    keys = {name: make_partner_key(tmp_path / "keys", name) for name in [*PARTNERS, "rogue"]}
    retail = pd.read_csv(embedded_path(), dtype=str)
    for name, country in PARTNERS.items():
        (tmp_path / name).mkdir()
        retail[retail["Country"] == country].to_csv(tmp_path / name / "retail.csv", index=False)
    port = _free_port()
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "fedscene"\n\n' + connection_toml(
        "fedscene", f"127.0.0.1:{port}", certs.ca_cert))
    env = os.environ | {"FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1"}
    processes = Processes(tmp_path, env)
    try:
        # Exactly the command `fedscene deploy coordinator` prints, on a loopback port.
        printed = coordinator_commands(certs.ca_cert.parent, tmp_path / "superlink.db", [],
                                       listen="127.0.0.1", port=port)
        superlink = next(line for line in printed if line.startswith("flower-superlink"))
        processes.start("superlink", *shlex.split(superlink.removesuffix(" &")))
        _wait_for(lambda: _registered(env, keys["p1"][1]), 60, "SuperLink start")
        for name in ("p2", "p3"):
            assert _registered(env, keys[name][1])
        yield {"root": tmp_path, "certs": certs, "keys": keys, "port": port, "env": env,
               "processes": processes}
    finally:
        processes.close()


def _registered(env, public_key: Path) -> bool:
    done = subprocess.run([str(BIN / "flwr"), "supernode", "register", str(public_key),
                           "fedscene"], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and "registered successfully" in done.stdout


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _supernode(federation, name: str, *extra: str, scene: str = "X",
               with_ca: bool = True) -> subprocess.Popen:
    """Exactly the command `fedscene deploy partner` prints (optionally without the CA)."""
    root = federation["root"]
    args = shlex.split(partner_command(
        f"127.0.0.1:{federation['port']}", federation["certs"].ca_cert,
        federation["keys"][name][0], scene, root / name / "retail.csv", root / name / "state",
        runtime_port=_free_port()))
    if not with_ca:
        at = args.index("--root-certificates")
        del args[at:at + 2]
    return federation["processes"].start(name, *args, *extra)


def _ledger(federation, name):
    return read_ledger(federation["root"] / name / "state" / "ledger.jsonl").entries


def test_partners_refused_without_registration_ca_or_tls(federation):
    refused = {
        "rogue": _supernode(federation, "rogue", "--max-retries", "2", "--max-wait-time", "20"),
        "no-ca": _supernode(federation, "p1", "--max-retries", "2", "--max-wait-time", "20",
                            with_ca=False),
        "insecure": _supernode(federation, "p2", "--insecure", "--max-retries", "2",
                               "--max-wait-time", "20", with_ca=False),
    }
    for what, process in refused.items():
        assert process.wait(timeout=120) != 0, what
    assert "Failed to activate SuperNode" in (federation["root"] / "rogue.log").read_text()


def test_campaign_with_dp_restart_and_audit(federation):
    root = federation["root"]
    config = root / "run.toml"
    config.write_text(
        '[data]\nsource = "online_retail"\nscenes = ["Spain", "Belgium", "Portugal"]\n'
        "[federation]\nrounds = 3\nround_timeout_s = 90\n[privacy]\nepsilon = 6.0\n"
        "[simulation]\nbootstrap_samples = 100\n")
    for name, country in PARTNERS.items():
        _supernode(federation, name, scene=country)
    out = root / "coordinator"
    run = subprocess.Popen(
        [str(BIN / "flwr"), "run", str(REPO), "fedscene", "--stream", "--run-config",
         f'config-path="{config}" algorithm="fedper" out-dir="{out}"'],
        env=federation["env"], cwd=root, stdout=open(root / "flwr-run.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT, start_new_session=True)
    federation["processes"].started.append((run, open(os.devnull, "wb")))  # noqa: SIM115

    # Kill partner p2 once it has trained round 1, and restart it on the same state.
    _wait_for(lambda: len(_ledger(federation, "p2")) >= 1, 300, "p2's first round")
    p2 = next(p for p, _ in federation["processes"].started if "p2" in " ".join(p.args)
              and "Belgium" in " ".join(p.args))
    federation["processes"].stop(p2)
    before_restart = _ledger(federation, "p2")
    _supernode(federation, "p2", scene="Belgium")
    assert run.wait(timeout=480) == 0, (root / "flwr-run.log").read_text()[-3000:]

    # Each partner holds its own head, plan and ledger, and only its own scene's.
    for name, country in PARTNERS.items():
        state = root / name / "state"
        assert {"local.pt", "privacy.json", "ledger.jsonl", "status.json"} <= {
            p.name for p in state.iterdir()}
        assert {e["scene"] for e in _ledger(federation, name)} == {country}
        evaluations = [json.loads(p.read_text()) for p in (state / "eval").glob("*.json")]
        assert evaluations and {e["scene"] for e in evaluations} == {country}
    assert not (out / "scenes").exists()  # nothing of the partners' state at the coordinator
    assert (out / "checkpoints").is_dir()

    # The restarted partner continued its budget and its head.
    entries = _ledger(federation, "p2")
    assert len(entries) > len(before_restart)
    resumed = entries[len(before_restart)]
    assert resumed["local_state_in"] == before_restart[-1]["local_state_out"]
    assert resumed["noise_multiplier"] == before_restart[-1]["noise_multiplier"]
    assert resumed["epsilon"] > before_restart[-1]["epsilon"]
    assert max(e["epsilon"] for e in entries) <= 6.0

    states = [str(root / name / "state") for name in PARTNERS]
    assert main(["audit", *states, "--jobs", "1"]) == 0
