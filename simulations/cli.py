"""`fedscene`: parse, validate, dispatch. Errors print as one line and exit non-zero."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedscene.common.config import load_config
from fedscene.common.errors import FedsceneError

# Wide enough for the data-check table when output is piped (rich falls back to 80 columns).
console = Console() if sys.stdout.isatty() else Console(width=120)


def _simulate(args: argparse.Namespace) -> int:
    from fedscene.simulations.runner import run_experiment

    config = load_config(args.config, args.set)
    out = Path(args.out)

    def progress(text: str) -> None:
        console.print(f"[bold cyan]fedscene[/] {text}")

    run_experiment(config, out, overwrite=args.overwrite, progress=progress,
                   verbose=args.verbose)
    console.print(f"[bold green]done[/]: read {out / 'report.md'}")
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


def _audit(args: argparse.Namespace) -> int:
    from fedscene.simulations.audit import audit, to_json
    from fedscene.simulations.audit_report import terminal_table, write_report

    results = audit(args.paths, near=args.near, jobs=args.jobs)
    if args.json:
        print(to_json(results))
    else:
        console.print(terminal_table(results))
        for result in results:
            for reason in result.reasons:
                console.print(f"[bold red]{result.verdict}[/] {result.scene}: {reason}",
                              soft_wrap=True)
    if args.report:
        write_report(results, Path(args.report))
        if not args.json:
            console.print(f"report written to {args.report}")
    return 0 if all(r.passed for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedscene",
        description="Federated, differentially private cross-scene recommendation.")
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser(
        "simulate", help="multi-scene simulation (embedded Online Retail slice by default)")
    simulate.add_argument("config", nargs="?", help="TOML config; omit for the defaults")
    simulate.add_argument("--out", default="fedscene-run", help="run directory to write")
    simulate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config value, e.g. federation.rounds=3")
    simulate.add_argument("--overwrite", action="store_true",
                          help="replace an existing run directory")
    simulate.add_argument("--verbose", action="store_true", help="show Flower's and Ray's log")
    simulate.set_defaults(run=_simulate)

    audit = commands.add_parser(
        "audit", help="verify privacy ledgers and recompute epsilon; exit 0 only if all pass")
    audit.add_argument("paths", nargs="+", metavar="STATE_DIR_OR_LEDGER",
                       help="scene state directories, run directories or ledger files")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--report", metavar="FILE", help="write a Markdown (.md) or HTML "
                       "(.html) report with a plot of epsilon over rounds")
    audit.add_argument("--near", type=float, default=0.9,
                       help="fraction of the budget from which a scene is 'near budget'")
    audit.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                       help="ledgers audited in parallel")
    audit.set_defaults(run=_audit)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser(
        "check", help="validate a dataset against the scene data contract")
    check.add_argument("config", nargs="?", help="TOML config; omit for the embedded default")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    check.set_defaults(run=_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FedsceneError as error:
        console.print(f"[bold red]error[/]: {error}", soft_wrap=True)
        return 2


def cli() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
