"""`fedscene`: parse, validate, dispatch. Errors print as one line and exit non-zero."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedscene.common.algorithms import DEPLOYMENT_DEFAULT, federated_names, reference_name
from fedscene.common.config import load_config, refuse_reproducible_noise
from fedscene.common.errors import FedsceneError
from fedscene.simulations.deploy import DEFAULT_PORT

# Wide enough for the data-check table when output is piped (rich falls back to 80 columns).
console = Console() if sys.stdout.isatty() else Console(width=120)


def default_config_path() -> Path:
    """The main job's config, packaged: what `fedscene simulate` runs without one."""
    return Path(str(resources.files("fedscene.simulations") / "configs" / "default.toml"))


def _simulate(args: argparse.Namespace) -> int:
    from fedscene.common.layout import RunLayout
    from fedscene.simulations.runner import run_experiment

    config = load_config(args.config or default_config_path(), args.set)
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


def _audit(args: argparse.Namespace) -> int:
    from fedscene.simulations.audit import audit, to_json
    from fedscene.simulations.audit_report import terminal_table, write_report

    if args.empirical:
        return _audit_empirical(args)
    if args.scene or args.set:
        raise FedsceneError("fedscene audit: --scene and --set belong to --empirical; add it, "
                            "or drop them to audit ledgers")
    if not args.paths:
        raise FedsceneError("fedscene audit: name at least one state directory, run "
                            "directory or ledger (or use --empirical)")
    results = audit(args.paths, near=args.near, jobs=args.jobs)
    if args.json:
        print(to_json(results))
    else:
        console.print(terminal_table(results))
        for result in results:
            for reason in result.reasons:
                console.print(f"[bold red]{result.verdict}[/] {result.scene}: {reason}",
                              soft_wrap=True)
        meanings = {(r.unit, r.per_purchase, r.per_shopper) for r in results if r.per_purchase}
        for unit, purchase, shopper in sorted(meanings, key=str)[:10]:
            console.print(f"unit {unit}: one purchase: {purchase}; one shopper: {shopper}",
                          soft_wrap=True)
    if args.report:
        write_report(results, Path(args.report))
        if not args.json:
            console.print(f"report written to {args.report}")
    return 0 if all(r.passed for r in results) else 1


def _audit_empirical(args: argparse.Namespace) -> int:
    import json

    from fedscene.simulations.empirical_audit import CONSISTENT, run_empirical_audit
    from fedscene.simulations.empirical_report import summary_line, terminal_table, write_report

    if len(args.paths) > 1:
        raise FedsceneError(f"fedscene audit --empirical takes one config (TOML), got "
                            f"{len(args.paths)} paths: {' '.join(args.paths)}")
    if not args.scene:
        raise FedsceneError("fedscene audit --empirical: --scene NAME is required (a scene "
                            "of the config's data)")
    if not 0.5 <= args.confidence < 1.0:
        raise FedsceneError(f"--confidence {args.confidence}: give a value in [0.5, 1)")
    if args.canaries < 2:
        raise FedsceneError(f"--canaries {args.canaries}: give at least 2 (1000 is usual)")
    config = load_config(args.paths[0] if args.paths else default_config_path(), args.set)
    result = run_empirical_audit(config, args.scene, canaries=args.canaries,
                                 confidence=args.confidence, algorithm=args.algorithm,
                                 examples=args.examples)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(terminal_table(result))
        console.print(summary_line(result), soft_wrap=True)
    if args.report:
        write_report(result, Path(args.report))
        if not args.json:
            console.print(f"report written to {args.report}")
    return 0 if result.verdict == CONSISTENT else 1


def _deploy_certs(args: argparse.Namespace) -> int:
    from fedscene.simulations.deploy import make_certificates

    paths = make_certificates(Path(args.out), args.host, args.days)
    console.print(f"CA certificate (give to every partner): {paths.ca_cert}\n"
                  f"CA key (keep offline): {paths.ca_key}\n"
                  f"SuperLink certificate for {', '.join(args.host)}: {paths.server_cert}\n"
                  f"SuperLink key: {paths.server_key}")
    return 0


def _deploy_partner_key(args: argparse.Namespace) -> int:
    from fedscene.simulations.deploy import make_partner_key

    private, public = make_partner_key(Path(args.out), args.name)
    console.print(f"private key (stays with the partner): {private}\n"
                  f"public key (send to the coordinator to register): {public}")
    return 0


def _deploy_coordinator(args: argparse.Namespace) -> int:
    from fedscene.simulations.deploy import connection_toml, coordinator_commands

    if args.config:
        refuse_reproducible_noise(load_config(args.config), args.config)
    certs = Path(args.certs)
    console.print("# $FLWR_HOME/config.toml (default ~/.flwr/config.toml) gets:")
    console.print(connection_toml(args.connection, f"{args.address}:{args.port}",
                                  (certs / "ca.crt").resolve()), markup=False)
    for line in coordinator_commands(certs.resolve(), Path(args.database).resolve(),
                                     [Path(k).resolve() for k in args.key],
                                     port=args.port, connection=args.connection,
                                     config_path=str(Path(args.config).resolve())
                                     if args.config else "", algorithm=args.algorithm,
                                     out_dir=args.out_dir):
        console.print(line, markup=False, soft_wrap=True)
    return 0


def _deploy_partner(args: argparse.Namespace) -> int:
    from fedscene.simulations.deploy import partner_command

    console.print(partner_command(args.superlink, Path(args.ca).resolve(),
                                  Path(args.key).resolve(), args.scene,
                                  Path(args.data).resolve(), Path(args.state).resolve()),
                  markup=False, soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedscene",
        description="Federated, differentially private cross-scene recommendation.")
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser(
        "simulate", help="multi-scene simulation (embedded Online Retail slice by default)")
    simulate.add_argument("config", nargs="?",
                          help="TOML config; omit for the main job (configs/default.toml)")
    simulate.add_argument("--out", default="fedscene-run", help="run directory to write")
    simulate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config value, e.g. federation.rounds=3")
    simulate.add_argument("--overwrite", action="store_true",
                          help="replace an existing run directory")
    simulate.add_argument("--verbose", action="store_true", help="show Flower's and Ray's log")
    simulate.set_defaults(run=_simulate)

    audit = commands.add_parser(
        "audit", help="verify privacy ledgers and recompute epsilon, or (--empirical) bound "
                      "what a scene's training leaks; exit 0 only if all pass")
    audit.add_argument("paths", nargs="*", metavar="STATE_DIR_OR_LEDGER",
                       help="scene state directories, run directories or ledger files; with "
                            "--empirical, the TOML config (omit for the main job's)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--report", metavar="FILE", help="write a Markdown (.md) or HTML "
                       "(.html) report with a plot of epsilon over rounds")
    audit.add_argument("--near", type=float, default=0.9,
                       help="fraction of the budget from which a scene is 'near budget'")
    audit.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                       help="ledgers audited in parallel")
    empirical = audit.add_argument_group(
        "empirical audit", "train one scene with canary shoppers and bound epsilon from "
                           "below (Steinke, Nasr & Jagielski 2023)")
    empirical.add_argument("--empirical", action="store_true",
                           help="run the one-run canary audit of a scene's training")
    empirical.add_argument("--scene", help="the scene to audit")
    empirical.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config value, e.g. privacy.epsilon=1")
    empirical.add_argument("--canaries", type=int, default=1000,
                           help="canary shoppers per adversary (each included w.p. 1/2)")
    empirical.add_argument("--confidence", type=float, default=0.95,
                           help="confidence of the lower bound")
    empirical.add_argument("--algorithm", default=reference_name(),
                           choices=federated_names(),
                           help="the training algorithm audited")
    empirical.add_argument("--examples", type=int, default=None,
                           help="training examples of a canary shopper (default: the "
                                "scene's 90th-percentile shopper's)")
    audit.set_defaults(run=_audit)

    deploy = commands.add_parser(
        "deploy", help="certificates, partner keys and the commands each side runs")
    deploy_commands = deploy.add_subparsers(dest="deploy_command", required=True)
    certs = deploy_commands.add_parser("certs", help="a CA and the SuperLink's certificate")
    certs.add_argument("--out", required=True, help="folder to write them to")
    certs.add_argument("--host", action="append", required=True,
                       help="a DNS name or IP address partners dial (repeat for several)")
    certs.add_argument("--days", type=int, default=365)
    certs.set_defaults(run=_deploy_certs)
    key = deploy_commands.add_parser("partner-key", help="a partner's authentication key pair")
    key.add_argument("name")
    key.add_argument("--out", required=True)
    key.set_defaults(run=_deploy_partner_key)
    coordinator = deploy_commands.add_parser(
        "coordinator", help="print the coordinator's commands")
    coordinator.add_argument("--certs", required=True, help="folder from `deploy certs`")
    coordinator.add_argument("--address", required=True,
                             help="host partners and `flwr` dial (one of the cert's --host)")
    coordinator.add_argument("--port", type=int, default=DEFAULT_PORT)
    coordinator.add_argument("--key", action="append", default=[],
                             help="a partner's .pub file (repeat)")
    coordinator.add_argument("--database", default="superlink.db")
    coordinator.add_argument("--connection", default="fedscene")
    coordinator.add_argument("--config", help="fedscene TOML the run uses")
    coordinator.add_argument("--algorithm", default=DEPLOYMENT_DEFAULT, choices=federated_names())
    coordinator.add_argument("--out-dir", default="fedscene-run")
    coordinator.set_defaults(run=_deploy_coordinator)
    partner = deploy_commands.add_parser("partner", help="print a partner's command")
    partner.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
    partner.add_argument("--ca", required=True, help="the coordinator's ca.crt")
    partner.add_argument("--key", required=True, help="the partner's private key")
    partner.add_argument("--scene", required=True)
    partner.add_argument("--data", required=True, help="the partner's data file")
    partner.add_argument("--state", required=True, help="the partner's state directory")
    partner.set_defaults(run=_deploy_partner)

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
