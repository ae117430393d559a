"""Real `flower-superlink` and `flower-supernode` processes over loopback with TLS and
SuperNode authentication, started from the commands `fedscene deploy` prints, and a
campaign driven by `flwr run`. Every process is killed (whole process groups) when a test
ends, whether it passed or failed."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from fedscene.cli.main import main
from fedscene.common.ledger import read_ledger
from fedscene.deploy.commands import partner_command
from fedscene.deploy.loopback import (
    CONNECTION,
    LoopbackFederation,
    embedded_partners,
    free_port,
)

pytestmark = pytest.mark.deployment
REPO = Path(__file__).resolve().parents[2]
ROGUE_APP = Path(__file__).resolve().parent / "rogue_app"
COUNTRIES = {"p1": "Germany", "p2": "France", "p3": "Spain"}


@pytest.fixture()
def federation(tmp_path):
    partners = embedded_partners(tmp_path, COUNTRIES)
    with LoopbackFederation(tmp_path, partners, extra_keys=("rogue",),
                            approved_apps=(REPO,)) as federation:
        federation.start_superlink()
        yield federation


def _campaign(root: Path, federation: str = "") -> Path:
    """A 3-round DP campaign over the partners' countries, with extra `[federation]` keys."""
    config = root / "run.toml"
    config.write_text(
        '[data]\nsource = "online_retail"\nscene_by = "country"\n'
        'scenes = ["Germany", "France", "Spain"]\n'
        f"[federation]\nrounds = 3\nround_timeout_s = 90\n{federation}"
        # 10-30 shoppers a partner in the embedded slice: below the default min_units.
        "[privacy]\nepsilon = 6.0\nmin_units = 5\n"
        "[simulation]\nbootstrap_samples = 100\n")
    return config


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _ledger(federation, name):
    return read_ledger(federation.partners[name].state_dir(federation.root)
                       / "ledger.jsonl").entries


def _saved_rounds(federation, name) -> int:
    """Rounds whose ledger entry the partner's saved state points at (0 if none yet)."""
    status = federation.partners[name].state_dir(federation.root) / "status.json"
    entries = _ledger(federation, name)
    if not status.exists() or not entries:
        return 0
    head = json.loads(status.read_text()).get("ledger_head")
    return next((i + 1 for i, e in enumerate(entries) if e["hash"] == head), 0)


def test_partners_refused_without_registration_ca_or_tls(federation):
    quick = ("--max-retries", "2", "--max-wait-time", "20")
    refused = {
        "unregistered key": federation.start_partner("rogue", *quick, scene="Spain"),
        "no CA": federation.start_partner("p1", *quick, with_ca=False),
        "insecure": federation.start_partner("p2", "--insecure", *quick, with_ca=False),
    }
    for what, process in refused.items():
        assert process.wait(timeout=120) != 0, what
    assert "Failed to activate SuperNode" in (federation.root / "rogue.log").read_text()


def test_campaign_with_dp_restart_and_audit(federation):
    root = federation.root
    nodes = {name: federation.start_partner(name) for name in COUNTRIES}
    out = root / "coordinator"
    run = federation.run(REPO, _campaign(root), "fedper", out)

    # Kill partner p2 once it has trained and saved round 1, and restart it on the same
    # state. (Killed between the ledger entry and the save, it would restart from its
    # previous head with the round's spend still counted: safe, but not what this checks.)
    _wait_for(lambda: _saved_rounds(federation, "p2") >= 1, 300, "p2's first saved round")
    federation.stop(nodes["p2"])
    before_restart = _ledger(federation, "p2")
    federation.start_partner("p2")
    assert run.wait(timeout=480) == 0, (root / "flwr-run.log").read_text()[-3000:]

    # Each partner holds its own head, plan and ledger, and only its own scene's.
    for name, country in COUNTRIES.items():
        state = federation.partners[name].state_dir(root)
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

    states = [str(federation.partners[n].state_dir(root)) for n in COUNTRIES]
    assert main(["audit", *states, "--jobs", "1"]) == 0


def test_an_absent_partner_is_waited_for_named_and_resumes_later(federation):
    """p3 is stopped after round 1: round 2 waits `partner_wait_s` for it, then goes on with
    the quorum of two and names it absent; p3, restarted, rejoins round 3 with its head and
    budget."""
    root = federation.root
    nodes = {name: federation.start_partner(name) for name in COUNTRIES}
    out = root / "coordinator"
    run = federation.run(REPO, _campaign(root, "partner_wait_s = 40\nquorum = 2\n"),
                         "fedper", out)
    run_log = root / "flwr-run.log"

    # Stop p3 once round 2 begins (it has replied to round 1), restart it once the
    # coordinator has gone on without it.
    _wait_for(lambda: "[ROUND 2/3]" in run_log.read_text(), 300, "round 2")
    federation.stop(nodes["p3"])
    state = federation.partners["p3"].state_dir(root)
    saved_head = json.loads((state / "status.json").read_text())["ledger_head"]
    _wait_for(lambda: "round 2 train: absent: Spain" in run_log.read_text(), 240,
              "the coordinator naming Spain absent in round 2")
    federation.start_partner("p3")
    assert run.wait(timeout=480) == 0, run_log.read_text()[-3000:]

    outcome = json.loads((out / "federation.json").read_text())
    trained = {r: {t["scene"] for t in outcome["trained"] if t["round"] == r} for r in (1, 2, 3)}
    assert trained == {1: {"Germany", "France", "Spain"}, 2: {"Germany", "France"},
                       3: {"Germany", "France", "Spain"}}
    absent = [a for a in outcome["absences"] if a["phase"] == "train"]
    assert [(a["round"], a["absent"]) for a in absent] == [(2, ["Spain"])]
    assert not outcome["below_quorum"]

    # p3 continued from the head and budget it had saved.
    entries = _ledger(federation, "p3")
    saved = next(e for e in entries if e["hash"] == saved_head)
    resumed = next(e for e in entries if e["round"] == 3)
    assert resumed["local_state_in"] == saved["local_state_out"]
    assert resumed["epsilon"] > saved["epsilon"]


def _plain_supernode(federation, name: str):
    """`name`'s SuperNode as Flower starts it by default (subprocess isolation: it runs
    whatever app a run ships), without fedscene's executor in front."""
    command = shlex.split(partner_command(
        f"127.0.0.1:{federation.port}", federation.certs.ca_cert, federation.keys[name][0],
        federation.partners[name].scene, federation.partners[name].data,
        federation.partners[name].state_dir(federation.root), federation.approvals,
        federation.app_public_key, runtime_port=free_port()))
    supernode = command[command.index("--") + 1:]
    at = supernode.index("--isolation")
    del supernode[at:at + 2]
    return federation.start(f"{name}-plain", supernode)


def test_an_app_the_coordinator_did_not_sign_is_not_executed(federation):
    """Anyone who reaches the SuperLink can submit a run (Flower 1.42's open-source Control
    API authenticates nobody): a plain SuperNode executes the rogue app's code; a partner
    behind fedscene's executor refuses it unexecuted."""
    markers = federation.root / "markers"
    markers.mkdir()
    federation.start_partner("p1")
    _plain_supernode(federation, "p2")
    rogue = federation.start("rogue-run", [
        "flwr", "run", str(ROGUE_APP), CONNECTION, "--stream", "--run-config",
        f'marker-dir="{markers}" nodes=2'])
    assert rogue.wait(timeout=300) == 0, (federation.root / "rogue-run.log").read_text()[-3000:]
    assert sorted(p.name for p in markers.glob("ran-at-*")) == ["ran-at-France"]
    replies = sorted((markers / "replies.txt").read_text().splitlines())
    assert replies[0] == "ran"
    assert replies[1].startswith("refused by the partner: app ")
    assert "is not one the coordinator approved (1 approved)" in replies[1]
