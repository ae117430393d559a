"""Wall time per round of a deployed campaign against a simulation of the same config.

    python -m benchmarks.deployment [--rounds 3] [--toy]

Deployment: a SuperLink and three SuperNodes on loopback with TLS and node authentication
(`deploy.loopback`), each partner holding only its country's rows, driven by
`flwr run`. Simulation: `run_arm` on Flower's Ray engine with the same scenes and config.
Reports per-round wall time as the server measured it, and where a client's time goes
(process uptime when a message arrives, the share of train messages that were their
process's first, data loading, training). Partners run fedscene's warm executor
(`deploy.executor`), so a partner's process outlives its messages. Writes
benchmarks/results/deployment.json (`--toy`: one round, for CI). Runs whether or not the
virtual environment is active (Flower's tools are taken from this interpreter's
environment); when it fails, it says where every process's log was kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks._common import write_json
from fedscene.common.algorithms import DEPLOYMENT_DEFAULT
from fedscene.common.config import load_config
from fedscene.common.data.sources import embedded_path
from fedscene.common.layout import ArmLayout
from fedscene.deploy.loopback import LoopbackFederation, embedded_partners
from fedscene.server.federation import FederationOutcome
from fedscene.simulations.engine import run_arm

REPO = Path(__file__).resolve().parents[1]
COUNTRIES = {"p1": "Germany", "p2": "France", "p3": "Spain"}


def _config_text(rounds: int, data_path: str = "") -> str:
    path = f'path = "{data_path}"\n' if data_path else ""
    return ('[data]\nsource = "online_retail"\n' + path
            + 'scene_by = "country"\nscenes = ["Germany", "France", "Spain"]\n'
            # Timings leave the partners only when released (ledgered as without DP).
            f"[federation]\nrounds = {rounds}\nrelease_metrics = true\n"
            # 10-30 shoppers a partner: below the default min_units, they would not train.
            "[privacy]\nmin_units = 5\n"
            "[simulation]\nbootstrap_samples = 200\n")


def _client_timings(outcome: dict) -> dict[str, float]:
    rows = outcome["trained"]
    keys = ("process-uptime-s", "load-s", "train-s")
    return {k: statistics.mean(r[k] for r in rows) for k in keys if rows and k in rows[0]} | {
        # the share of train messages that were the first their client process handled
        "fresh-process-share": sum(r.get("process-trainings", 1) == 1 for r in rows) / max(
            len(rows), 1)}


def deployed(root: Path, rounds: int) -> tuple[float, dict]:
    partners = embedded_partners(root, COUNTRIES)
    config = root / "run.toml"
    config.write_text(_config_text(rounds))
    with LoopbackFederation(root, partners, approved_apps=(REPO,)) as federation:
        federation.start_superlink()
        for name in COUNTRIES:
            federation.start_partner(name)
        start = time.perf_counter()
        run = federation.run(REPO, config, DEPLOYMENT_DEFAULT, root / "coordinator")
        if run.wait(timeout=1800) != 0:
            raise RuntimeError(f"flwr run failed; see {root / 'flwr-run.log'}")
        wall = time.perf_counter() - start
    return wall, asdict(FederationOutcome.read(ArmLayout(root / "coordinator").federation_json))


def simulated(root: Path, rounds: int) -> tuple[float, dict]:
    root.mkdir(parents=True)
    path = root / "run.toml"
    path.write_text(_config_text(rounds, str(embedded_path())))
    start = time.perf_counter()
    outcome = run_arm(load_config(path), algorithm=DEPLOYMENT_DEFAULT, out_dir=root / "sim",
                      seed=0, run_id="b")
    wall = time.perf_counter() - start
    return wall, asdict(outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--toy", action="store_true", help="one round")
    args = parser.parse_args()
    if args.toy:
        args.rounds = 1
    rows = {}
    tmp = Path(tempfile.mkdtemp(prefix="fedscene-deploy-bench-"))
    try:
        for name, how in (("deployment", deployed), ("simulation", simulated)):
            wall, outcome = how(tmp / name, args.rounds)
            rounds = {int(k): v for k, v in outcome["round_seconds"].items()}
            rows[name] = {"total_s": wall, "round_s": rounds,
                          "mean_round_s": statistics.mean(rounds.values()),
                          "client": _client_timings(outcome)}
            print(name, json.dumps(rows[name]))
    except BaseException:
        print(f"the benchmark failed; every process's log is kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    ratio = rows["deployment"]["mean_round_s"] / rows["simulation"]["mean_round_s"]
    table = Table(title=f"{DEPLOYMENT_DEFAULT}, 3 partners, {args.rounds} rounds: deployment "
                        f"vs simulation")
    for column in ("", "total s", "mean round s", "client uptime s", "fresh process",
                   "load s", "train s"):
        table.add_column(column, justify="right")
    for name, row in rows.items():
        client = row["client"]
        table.add_row(name, f"{row['total_s']:.1f}", f"{row['mean_round_s']:.1f}",
                      f"{client.get('process-uptime-s', 0):.1f}",
                      f"{client.get('fresh-process-share', 0):.0%}",
                      f"{client.get('load-s', 0):.2f}", f"{client.get('train-s', 0):.2f}")
    Console(width=120).print(table)
    print(f"deployed round / simulated round = {ratio:.2f}x (target at most 1.5x)")
    print(f"wrote {write_json('deployment.json', rows | {'ratio': ratio, 'toy': args.toy})}")


if __name__ == "__main__":
    main()
