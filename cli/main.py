"""`fedscene`: parse and dispatch to the three jobs' commands (simulate and check data,
audit, deploy). Errors print as one line and exit with status 2."""

from __future__ import annotations

import argparse
import sys

from fedscene.audit import cli as audit_cli
from fedscene.common.console import console
from fedscene.common.errors import FedsceneError
from fedscene.deploy import cli as deploy_cli
from fedscene.simulations import cli as simulations_cli
from fedscene.simulations.configs import default_config_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedscene",
        description="Federated, differentially private cross-scene recommendation.")
    commands = parser.add_subparsers(dest="command", required=True)
    simulations_cli.register(commands)
    audit_cli.register(commands, main_job_config=default_config_path())
    deploy_cli.register(commands)
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
