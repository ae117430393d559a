"""The empirical audit's bounds and run time: the real mechanism and each positive control.

    python -m benchmarks.empirical_audit [--scene toys] [--canaries 1000] [--rounds 5]
        [--epsilon 1 --epsilon 8] [--toy]

Runs `fedscene audit --empirical` (the main job's config, `--rounds` rounds of the local
algorithm) for every mechanism of `audit/positive_controls.py` at each claimed
epsilon; prints the white- and black-box lower bounds beside the claim, what perfect
guesses could prove, the verdict and the seconds each audit took, and writes
benchmarks/results/empirical_audit.json (`--toy`: one round, 200 canaries, epsilon 1).
"""

from __future__ import annotations

import argparse
import resource

from rich.console import Console
from rich.table import Table

from benchmarks._common import write_json
from fedscene.audit.positive_controls import CONTROLS, audit_control
from fedscene.simulations.configs import default_config_path


def audit_row(control: str, epsilon: float, scene: str, canaries: int, rounds: int
              ) -> dict:
    result = audit_control(control, default_config_path(),
                           [f"federation.rounds={rounds}", f"privacy.epsilon={epsilon}"],
                           scene, canaries=canaries)
    return {"mechanism": control, "budget_epsilon": epsilon} | result.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="toys")
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilon", type=float, action="append")
    parser.add_argument("--toy", action="store_true")
    args = parser.parse_args()
    epsilons = args.epsilon or [1.0, 8.0]
    if args.toy:
        args.canaries, args.rounds, epsilons = 200, 1, [1.0]
    rows = [audit_row(control, epsilon, args.scene, args.canaries, args.rounds)
            for epsilon in epsilons for control in CONTROLS]
    table = Table(title=f"empirical audit of scene {args.scene!r}: {args.rounds} rounds, "
                        f"m = {args.canaries} canary shoppers per adversary, 95% confidence")
    for column in ("mechanism", "claimed eps", "white-box bound", "black-box bound",
                   "most m can prove", "verdict", "seconds"):
        table.add_column(column, justify="left" if column in ("mechanism", "verdict")
                         else "right")
    for row in rows:
        table.add_row(row["mechanism"], f"{row['claimed_epsilon']:.3f}",
                      f"{row['white_box']['epsilon_lower']:.3f}",
                      f"{row['black_box']['epsilon_lower']:.3f}",
                      f"{row['white_box']['epsilon_ceiling']:.2f}", row["verdict"],
                      f"{row['seconds']:.1f}")
    Console(width=120).print(table)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = write_json("empirical_audit.json", {
        "scene": args.scene, "canaries": args.canaries, "rounds": args.rounds,
        "toy": args.toy, "peak_rss_mb": peak, "rows": rows})
    print(f"process peak {peak:.0f} MB; wrote {path}")


if __name__ == "__main__":
    main()
