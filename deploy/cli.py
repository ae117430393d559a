"""`fedscene deploy`: credentials and the commands the coordinator and each partner run."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedscene.common.algorithms import DEPLOYMENT_DEFAULT, describe, federated_names
from fedscene.common.config import load_config, refuse_reproducible_noise
from fedscene.common.console import console
from fedscene.common.errors import FedsceneError
from fedscene.deploy.commands import DEFAULT_PORT


def _deploy_certs(args: argparse.Namespace) -> int:
    from fedscene.deploy.credentials import make_certificates

    paths = make_certificates(Path(args.out), args.host, args.days)
    console.print(f"CA certificate (give to every partner): {paths.ca_cert}\n"
                  f"CA key (keep offline): {paths.ca_key}\n"
                  f"SuperLink certificate for {', '.join(args.host)}: {paths.server_cert}\n"
                  f"SuperLink key: {paths.server_key}")
    return 0


def _deploy_partner_key(args: argparse.Namespace) -> int:
    from fedscene.deploy.credentials import make_partner_key

    private, public = make_partner_key(Path(args.out), args.name)
    console.print(f"private key (stays with the partner): {private}\n"
                  f"public key (send to the coordinator to register): {public}")
    return 0


def _deploy_app_key(args: argparse.Namespace) -> int:
    from fedscene.deploy.app_signing import make_signing_key

    private, public = make_signing_key(Path(args.out))
    console.print(f"app-signing key (stays with the coordinator): {private}\n"
                  f"public key (give to every partner, with each approval): {public}")
    return 0


def _deploy_sign_app(args: argparse.Namespace) -> int:
    from fedscene.deploy.app_signing import fab_of, sign_fab

    approval = sign_fab(fab_of(Path(args.app)), Path(args.key))
    approval.write(Path(args.out))
    console.print(f"approved app {approval.fab_sha256[:12]} (the FAB `flwr run {args.app}` "
                  f"submits): {args.out}; give it to every partner")
    return 0


def _deploy_serve(args: argparse.Namespace) -> int:
    from fedscene.deploy.executor import approved_by, runtime_address, serve_node

    supernode = args.supernode[1:] if args.supernode[:1] == ["--"] else args.supernode
    try:
        address = runtime_address(supernode)
    except ValueError as error:
        raise FedsceneError(f"deploy serve: {error}") from None
    refuse = approved_by([Path(a) for a in args.approval], Path(args.coordinator_key))
    return serve_node(supernode, address, refuse)


def _deploy_coordinator(args: argparse.Namespace) -> int:
    from fedscene.deploy.commands import connection_toml, coordinator_commands

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
    from fedscene.deploy.commands import partner_command

    console.print(partner_command(args.superlink, Path(args.ca).resolve(),
                                  Path(args.key).resolve(), args.scene,
                                  Path(args.data).resolve(), Path(args.state).resolve(),
                                  [Path(a).resolve() for a in args.approval or
                                   ["approval.json"]],
                                  Path(args.coordinator_key).resolve()),
                  markup=False, soft_wrap=True)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add this job's commands to `fedscene`."""
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
    coordinator.add_argument("--algorithm", default=DEPLOYMENT_DEFAULT, choices=federated_names(),
                             help="what the campaign trains (" + describe(federated_names())
                                  + ")")
    coordinator.add_argument("--out-dir", default="fedscene-run")
    coordinator.set_defaults(run=_deploy_coordinator)
    partner = deploy_commands.add_parser("partner", help="print a partner's command")
    partner.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
    partner.add_argument("--ca", required=True, help="the coordinator's ca.crt")
    partner.add_argument("--key", required=True, help="the partner's private key")
    partner.add_argument("--scene", required=True)
    partner.add_argument("--data", required=True, help="the partner's data file")
    partner.add_argument("--state", required=True, help="the partner's state directory")
    partner.add_argument("--approval", action="append",
                         help="the coordinator's signed app approval (`deploy sign-app`; "
                              "default approval.json; repeat for several)")
    partner.add_argument("--coordinator-key", default="coordinator-app.pub",
                         help="the coordinator's app-signing public key (`deploy app-key`)")
    partner.set_defaults(run=_deploy_partner)
    app_key = deploy_commands.add_parser(
        "app-key", help="the coordinator's app-signing key pair (Ed25519)")
    app_key.add_argument("--out", required=True)
    app_key.set_defaults(run=_deploy_app_key)
    sign = deploy_commands.add_parser(
        "sign-app", help="approve the app `flwr run APP` submits, for partners' executors")
    sign.add_argument("--key", required=True, help="the coordinator's app-signing key")
    sign.add_argument("--app", default=".", help="the app folder given to `flwr run`")
    sign.add_argument("--out", default="approval.json")
    sign.set_defaults(run=_deploy_sign_app)
    serve = deploy_commands.add_parser(
        "serve", help="a partner's SuperNode and its warm executor, running only approved "
                      "apps (what `deploy partner` prints)")
    serve.add_argument("--approval", action="append", required=True,
                       help="an approval from `deploy sign-app` (repeat for several apps)")
    serve.add_argument("--coordinator-key", required=True,
                       help="the coordinator's app-signing public key")
    serve.add_argument("supernode", nargs=argparse.REMAINDER,
                       help="-- then the flower-supernode command (--isolation process)")
    serve.set_defaults(run=_deploy_serve)
