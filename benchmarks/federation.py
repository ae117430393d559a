"""Wall time of an N-scene, R-round Flower simulation against the same work in a plain loop.

    python -m benchmarks.federation [--scenes 4 8 16] [--rounds 3] [--toy]

Both sides run the same client code (`client.task.train_round` and `evaluate_round`, DP on,
fedper) on the same synthetic scenes; the loop does it sequentially in one process and
averages the encoders with numpy, the simulation goes through Flower's Ray engine with one
CPU per client. The ratio is simulation / loop (target at N=8: at most 1.3x). Writes
benchmarks/results/federation.json (`--toy`: 2 small scenes, 1 round, for CI).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks._common import write_json
from fedscene.client.state import SceneState
from fedscene.client.task import RoundRequest, evaluate_round, load_scene_dataset, train_round
from fedscene.common.algorithms import DEPLOYMENT_DEFAULT
from fedscene.common.config import ExperimentConfig
from fedscene.server.federation import initial_shared
from fedscene.simulations.engine import run_arm


def config_for(scenes: int, rounds: int, users: int = 120) -> ExperimentConfig:
    names = [f"scene{i}" for i in range(scenes)]
    return ExperimentConfig.model_validate({
        "data": {"source": "synthetic", "scenes": names,
                 "synthetic": {"num_scenes": scenes, "users_per_scene": users}},
        "federation": {"rounds": rounds},
        # The toy's scenes have 30 shoppers: below the default min_units, they would not train.
        "privacy": {"min_units": 5},
        "simulation": {"bootstrap_samples": 200}})


def plain_loop(config: ExperimentConfig, root: Path) -> float:
    torch.set_num_threads(1)
    datasets = {s: load_scene_dataset(config, s) for s in config.data.scenes}  # as cached
    start = time.perf_counter()
    shared = initial_shared(config, DEPLOYMENT_DEFAULT, 0)
    for round_ in range(1, config.federation.rounds + 1):
        updates = []
        for scene, dataset in datasets.items():
            state = SceneState(root / scene, scene)
            request = RoundRequest(config, DEPLOYMENT_DEFAULT, round_, "b", 0, shared)
            outcome = train_round(state, dataset, request)
            updates.append(outcome.shared)
        # The unweighted mean, as the server takes it (sizes stay private by default).
        shared = {k: sum(u[k] for u in updates) / len(updates) for k in shared}
        for scene, dataset in datasets.items():
            evaluate_round(SceneState(root / scene, scene), dataset,
                           RoundRequest(config, DEPLOYMENT_DEFAULT, round_, "b", 0, shared))
    return time.perf_counter() - start


def simulation(config: ExperimentConfig, root: Path) -> float:
    start = time.perf_counter()
    run_arm(config, algorithm=DEPLOYMENT_DEFAULT, out_dir=root, seed=0, run_id="bench")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--toy", action="store_true", help="2 scenes of 30 users, 1 round")
    args = parser.parse_args()
    if args.toy:
        args.scenes, args.rounds = [2], 1
    rows = []
    for n in args.scenes:
        config = config_for(n, args.rounds, 30 if args.toy else 120)
        work = Path(tempfile.mkdtemp(prefix="fedscene-bench-"))
        try:
            loop_s = plain_loop(config, work / "loop")
            sim_s = simulation(config, work / "sim")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append({"scenes": n, "rounds": args.rounds, "plain_loop_s": loop_s,
                     "simulation_s": sim_s, "ratio": sim_s / loop_s})
        print(json.dumps(rows[-1]))
    table = Table(title=f"Flower simulation vs plain loop, {DEPLOYMENT_DEFAULT} with DP, "
                        f"{args.rounds} rounds")
    for column in ("scenes", "plain loop s", "simulation s", "ratio"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["scenes"]), f"{row['plain_loop_s']:.1f}",
                      f"{row['simulation_s']:.1f}", f"{row['ratio']:.2f}x")
    Console(width=120).print(table)
    path = write_json("federation.json",
                      {"target_ratio_at_8": 1.3, "toy": args.toy, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
