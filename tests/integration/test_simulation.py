"""Real Flower simulations (Ray backend) on small synthetic scenes.

What is checked comes from the messages the server received, the checkpoints it wrote and
the ledgers the clients kept, not from reading the code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedscene.cli.main import main
from fedscene.client.state import SceneState
from fedscene.common.config import ExperimentConfig, SyntheticConfig
from fedscene.common.data.synthetic import generate_synthetic
from fedscene.common.errors import FedsceneError
from fedscene.common.layout import ArmLayout
from fedscene.common.ledger import read_ledger
from fedscene.server.federation import initial_shared
from fedscene.simulations.engine import run_arm
from fedscene.simulations.runner import run_experiment
from tests.conftest import synthetic_data

pytestmark = pytest.mark.integration
SCENES = ["scene0", "scene1", "scene2"]


def _config(rounds: int = 3, arms=("fedper",)) -> ExperimentConfig:
    data = json.loads(synthetic_data(num_scenes=3, users_per_scene=40).model_dump_json())
    return ExperimentConfig.model_validate({
        "data": data | {"scenes": SCENES},
        # No popularity prior nor co-purchase factors (their releases are ledger entries of
        # their own, tested apart), and min_units below the scenes' 40 shoppers, so that
        # they train.
        "model": {"embedding_dim": 8, "hash_buckets": 512, "text_dim": 64, "head_hidden": 8,
                  "popularity_prior": False, "copurchase": False},
        "privacy": {"epsilon": 4.0, "min_units": 5},
        "federation": {"rounds": rounds},
        "simulation": {"arms": list(arms), "bootstrap_samples": 100, "object_store_mb": 100}})


def test_fedper_shares_only_the_encoder_and_heads_stay_local(tmp_path):
    config = _config(rounds=3)
    replies: dict[int, list[tuple[str, dict[str, np.ndarray], dict]]] = {}

    def observe(server_round, scene, content):
        arrays = {k: content["arrays"][k].numpy() for k in content["arrays"]}
        replies.setdefault(server_round, []).append(
            (scene, arrays, dict(content["metrics"])))

    outcome = run_arm(config, algorithm="fedper", out_dir=tmp_path, seed=0, run_id="t1",
                      observer=observe)
    assert outcome.failures == []
    assert sorted(replies) == [1, 2, 3]
    encoder_keys = set(initial_shared(config, "fedper", 0))
    for server_round, round_replies in replies.items():
        assert sorted(scene for scene, _, _ in round_replies) == SCENES
        for scene, arrays, metrics in round_replies:
            assert not any(k.startswith("head.") for k in arrays), (server_round, scene)
            assert set(arrays) == encoder_keys
            assert metrics == {}  # no loss, size or timing leaves the scene by default

    # The global encoder changes only by aggregation: checkpoint r is the mean of round r's
    # replies (unweighted: sizes stay private; server learning rate 1, no momentum), and
    # round 0 is the init.
    start = torch.load(tmp_path / "checkpoints" / "round_0000.pt")
    for name, value in initial_shared(config, "fedper", 0).items():
        torch.testing.assert_close(start[name], value)
    for server_round, round_replies in replies.items():
        saved = torch.load(tmp_path / "checkpoints" / f"round_{server_round:04d}.pt")
        weights = np.full(len(round_replies), 1.0 / len(round_replies))
        for name in encoder_keys:
            mean = sum(w * arrays[name] for w, (_, arrays, _) in zip(weights, round_replies,
                                                                      strict=True))
            np.testing.assert_allclose(saved[name].numpy(), mean, rtol=1e-5, atol=1e-6)

    # Each scene's head after round r is where round r+1 starts.
    for scene in SCENES:
        entries = read_ledger(tmp_path / "scenes" / scene / "ledger.jsonl").entries
        assert [e["round"] for e in entries] == [1, 2, 3]
        for before, after in zip(entries, entries[1:], strict=False):
            assert after["local_state_in"] == before["local_state_out"]
            assert after["epsilon"] > before["epsilon"]
        assert entries[-1]["epsilon"] <= 4.0

    # A second run on the same state directories continues the same budgets: spent, so no
    # scene trains and the server stops asking after the first refusal.
    again = run_arm(config, algorithm="fedper", out_dir=tmp_path, seed=0, run_id="t2")
    assert again.exhausted == SCENES and again.trained == []
    for scene in SCENES:
        assert len(read_ledger(tmp_path / "scenes" / scene / "ledger.jsonl").entries) == 3


def test_a_failing_client_is_named_and_the_run_finishes(tmp_path):
    config = _config(rounds=3)

    def break_scene1(server_round, scene, content):
        if server_round == 1 and scene == "scene1":
            (tmp_path / "scenes" / "scene1" / "local.pt").write_bytes(b"not a checkpoint")

    outcome = run_arm(config, algorithm="fedper", out_dir=tmp_path, seed=0, run_id="t3",
                      observer=break_scene1)
    train_failures = [(f["round"], f["scene"]) for f in outcome.failures
                      if f["phase"] == "train"]
    assert train_failures == [(2, "scene1"), (3, "scene1")]
    # The coordinator learns that it failed, not why: the reason stays with the scene.
    assert all(f["scene"] == "scene1" and "failed at the scene" in f["reason"]
               and "local.pt" not in f["reason"] for f in outcome.failures)
    kept = (tmp_path / "scenes" / "scene1" / "errors.log").read_text()
    assert "round 2 train" in kept and "local.pt" in kept
    final = {e["scene"] for e in outcome.evaluations if e["round"] == 3}
    assert final == {"scene0", "scene2"}


def test_harness_sweep_report_and_audit(tmp_path, capsys):
    config = _config(rounds=2, arms=("local", "fedper", "centralized"))
    config = config.model_copy(update={"simulation": config.simulation.model_copy(
        update={"privacy_sweep": [4.0, "none"]})})
    out = tmp_path / "run"
    results = run_experiment(config, out, progress=lambda _: None)
    for name in ("results.json", "rounds.csv", "report.md", "rounds_full-hr10.png",
                 "rounds_hr10.png", "scenes_full-hr10.png", "privacy_utility_full-hr10.png",
                 "run.json"):
        assert (out / name).exists(), name
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["arms"]) == {"local@eps4", "local@noDP", "fedper@eps4", "fedper@noDP",
                                  "centralized"}
    assert saved["arms"]["fedper@eps4"]["gain_baseline"] == "local@eps4"
    assert set(saved["arms"]["fedper@eps4"]["gain_over_local"]) == set(SCENES)
    assert saved["arms"]["fedper@eps4"]["privacy"]["scene0"][0]["epsilon"] <= 4.0
    assert saved["arms"]["fedper@noDP"]["privacy"]["scene0"][0]["epsilon"] == "inf"
    assert set(saved["baselines"]) == {"popularity-scene", "popularity-recent",
                                       "popularity-all", "content", "cooccurrence",
                                       "dp-popularity"}
    assert saved["primary_metric"] == "full-hr@10"
    for name, baseline in saved["baselines"].items():  # the arms' test rows, every metric
        for scene in SCENES:
            assert set(baseline["per_scene"][scene]) == set(
                saved["arms"]["fedper@eps4"]["per_scene"][scene]), name
    assert set(saved["arms"]["fedper@eps4"]["gain_over_baselines"]["content"]) == set(SCENES)
    assert saved["baselines"]["dp-popularity"]["mechanism"]["scene0"]["epsilon"] == 4.0
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    report = (out / "report.md").read_text()
    assert "Privacy-utility" in report and "Gain over `local`" in report
    assert "Primary metric: full-hr@10" in report and "Gain over each baseline" in report
    assert results.run_id == saved["run_id"]
    with pytest.raises(FedsceneError, match=rf"already holds run {results.run_id}"):
        run_experiment(config, out, progress=lambda _: None)

    # The DP arms' ledgers audit clean; the no-DP ones are reported as such (exit 1).
    dp_arms = [str(out / "arms" / f"{arm}@eps4-seed0") for arm in ("local", "fedper")]
    assert main(["audit", *dp_arms, "--jobs", "1"]) == 0
    # Each reply carried the scene's ledger head; the coordinator's record matches them.
    record = out / "arms" / "fedper@eps4-seed0" / "federation.json"
    heads = json.loads(record.read_text())["ledger_heads"]
    assert {(h["round"], h["phase"]) for h in heads} == {
        (r, p) for r in (1, 2) for p in ("train", "evaluate")}
    assert main(["audit", dp_arms[1], "--coordinator", str(record), "--jobs", "1"]) == 0
    assert main(["audit", str(out), "--jobs", "1"]) == 1
    assert "no DP" in capsys.readouterr().out
    # A tampered copy fails and names the scene and the entry.
    ledger = out / "arms" / "fedper@eps4-seed0" / "scenes" / "scene2" / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["steps"] -= 1
    ledger.write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n")
    assert main(["audit", *dp_arms, "--jobs", "1"]) == 1
    out_text = capsys.readouterr().out
    assert "altered scene2" in out_text and "line 1 (round 1)" in out_text


def _uneven_scenes(tmp_path) -> dict:
    """Three scenes that sell one catalogue, written as tables: two of 150 shoppers and one
    of 40, too few to count popularity or train under DP. Titles are random words, so
    content similarity says nothing and popularity is what a scene can know."""
    raw = generate_synthetic(SyntheticConfig(num_scenes=3, users_per_scene=150, shift=0.0,
                                             num_items=200, items_per_scene=200,
                                             text_signal=0.0))
    rows = raw.interactions
    small = rows[rows["scene"] == "scene2"]
    kept = small["user"].isin(small["user"].drop_duplicates().iloc[:40])
    rows = rows[(rows["scene"] != "scene2") | kept]
    rows.rename(columns={"user": "user_id", "item": "item_id", "time": "timestamp"}).to_csv(
        tmp_path / "interactions.csv", index=False)
    raw.items.rename(columns={"item": "item_id", "text": "title"}).to_csv(
        tmp_path / "items.csv", index=False)
    return {"source": "table", "path": str(tmp_path / "interactions.csv"),
            "items_path": str(tmp_path / "items.csv"), "scenes": SCENES,
            "item_columns": {"category": "category"}}


def test_released_popularity_is_pooled_over_flower_and_reaches_the_small_scene(tmp_path):
    def config(pooled_weight: float) -> ExperimentConfig:
        return ExperimentConfig.model_validate({
            "data": _uneven_scenes(tmp_path),
            # The pool at the prior's weight: the default 0.25 suits real titles
            # (client.pooled). Reproducible noise: the two runs differ only by the pool.
            "model": {"embedding_dim": 8, "hash_buckets": 512, "text_dim": 64,
                      "head_hidden": 8, "copurchase": False,
                      "pooled_prior_weight": pooled_weight},
            "privacy": {"epsilon": 8.0, "min_units": 50, "reproducible_noise": True},
            "federation": {"rounds": 2},
            "simulation": {"bootstrap_samples": 100, "object_store_mb": 100}})

    sent: dict[str, list[np.ndarray]] = {}

    def observe(server_round, scene, content):
        if "popularity" in content.array_records:
            sent.setdefault(scene, []).append(content["popularity"]["counts"].numpy())

    out = tmp_path / "pooled"
    outcome = run_arm(config(2.0), algorithm="fedper", out_dir=out, seed=0, run_id="t4",
                      observer=observe)
    assert outcome.failures == [] and outcome.too_few_units == ["scene2"]
    # What each large scene sent, every round, is the release its own ledger holds.
    assert sorted(sent) == outcome.pooled_popularity == ["scene0", "scene1"]
    for scene, counts in sent.items():
        assert len(counts) == 2
        saved = torch.load(out / "scenes" / scene / "local.pt")
        for each_round in counts:
            np.testing.assert_array_equal(each_round,
                                          saved["head.local_ids.prior_counts"].numpy())
        [release] = [e for e in read_ledger(out / "scenes" / scene / "ledger.jsonl").entries
                     if e["algorithm"] == "popularity-prior"]
        assert "sent to the coordinator" in release["released"]
    # The small scene spent nothing, yet ranked by the pool: the same run without it (the
    # weight at 0: nothing is sent) leaves it at content similarity on random titles.
    ledger = out / "scenes" / "scene2" / "ledger.jsonl"
    assert not ledger.exists() or not read_ledger(ledger).entries
    unpooled = run_arm(config(0.0), algorithm="fedper", out_dir=tmp_path / "unpooled",
                       seed=0, run_id="t5")
    assert unpooled.pooled_popularity == []
    scores = []
    for root in (out, tmp_path / "unpooled"):
        state = SceneState(ArmLayout(root).scene("scene2"), "scene2")
        last = json.loads(state.evaluation_files()[-1].read_text())
        scores.append(np.mean(last["per_user"]["full-hr@10"]))
    assert scores[0] > scores[1] + 0.1, scores
