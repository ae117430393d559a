"""`fedscene simulate` and `fedscene data check`: the simulation job's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from fedscene.common.config import load_config
from fedscene.common.console import console
from fedscene.simulations.configs import default_config_path


def _simulate(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path(), args.set)  # refuse first

    from fedscene.common.layout import RunLayout
    from fedscene.simulations.runner import run_experiment  # torch, Flower: seconds
    out = Path(args.out)

    def progress(text: str) -> None:
        console.print(f"[bold cyan]fedscene[/] {text}")

    run_experiment(config, out, overwrite=args.overwrite, progress=progress,
                   verbose=args.verbose)
    layout = RunLayout(out)
    console.print(f"[bold green]done[/]: read {layout.report_md} (or open "
                  f"{layout.report_html} in a browser)")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from fedscene.common.data import build_scene, load_raw_dataset, resolve_scenes

    config = load_config(args.config, args.set)
    raw = load_raw_dataset(config.data)
    scenes = resolve_scenes(raw, config.data)
    table = Table()
    for column in ("scene", "users", "items", "rows", "train", "test", "from", "to"):
        table.add_column(column, justify="left" if column == "scene" else "right")
    for scene in scenes:
        built = build_scene(raw, scene, config.data, config.model)
        rows = raw.interactions[raw.interactions["scene"] == scene]
        table.add_row(scene, str(built.n_users), str(built.n_items), str(len(rows)),
                      str(built.n_train), str(len(built.test_item)),
                      str(rows["time"].min())[:10], str(rows["time"].max())[:10])
    console.print(table)
    console.print(f"{raw.origin}: {len(scenes)} scenes pass the data contract", soft_wrap=True)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add this job's commands to `fedscene`."""
    simulate = commands.add_parser(
        "simulate", help="multi-scene simulation (embedded Online Retail slice by default)")
    simulate.add_argument("config", nargs="?",
                          help="TOML config; omit for the main job "
                               "(simulations/configs/default.toml)")
    simulate.add_argument("--out", default="fedscene-run", help="run directory to write")
    simulate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config value, e.g. federation.rounds=3")
    simulate.add_argument("--overwrite", action="store_true",
                          help="replace an existing run directory")
    simulate.add_argument("--verbose", action="store_true", help="show Flower's and Ray's log")
    simulate.set_defaults(run=_simulate)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser(
        "check", help="validate a dataset against the scene data contract")
    check.add_argument("config", nargs="?", help="TOML config; omit for the embedded default")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    check.set_defaults(run=_data_check)
