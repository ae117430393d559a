"""`fedscene deploy`: the commands each side runs.

The coordinator runs a SuperLink with TLS (a CA it creates, `deploy.credentials`), SuperNode
authentication and a persistent database, registers each partner's public key, and starts
runs with `flwr run`. A partner runs one SuperNode with the CA certificate, its private key
and node config naming its scene, data and state directory, so data and state stay on its
disk.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from fedscene.common.algorithms import DEPLOYMENT_DEFAULT

# Flower 1.42 (as 1.41) serves the Fleet, Control and Runtime APIs from one HTTPS server.
DEFAULT_PORT = 9092
SUPERNODE_RUNTIME_PORT = 9094  # a SuperNode's local Runtime API; distinct per node on a host


def _command(*parts: str) -> str:
    return " ".join(shlex.quote(p) for p in parts)


def coordinator_commands(certs: Path, database: Path, public_keys: list[Path],
                         listen: str = "0.0.0.0", port: int = DEFAULT_PORT,
                         connection: str = "fedscene", config_path: str = "",
                         algorithm: str = DEPLOYMENT_DEFAULT, out_dir: str = "fedscene-run",
                         num_nodes: int = 0, app_key: Path = Path("coordinator-app"),
                         approval: Path = Path("approval.json")) -> list[str]:
    """Start the SuperLink, register partners, sign the app, start a run."""
    superlink = _command(
        "flower-superlink", "--ssl-ca-certfile", str(certs / "ca.crt"),
        "--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key"),
        "--enable-supernode-auth", "--database", str(database),
        "--host", listen, "--port", str(port), "--disable-runtime-dependency-installation")
    lines = ["export FLWR_DISABLE_UPDATE_CHECK=1", superlink + " &"]
    lines += [_command("flwr", "supernode", "register", str(key), connection)
              for key in public_keys]
    run_config = (f'config-path="{config_path}" algorithm="{algorithm}" out-dir="{out_dir}"'
                  + (f" num-nodes={num_nodes}" if num_nodes else ""))
    lines.append(_command("fedscene", "deploy", "sign-app", "--key", str(app_key), "--app", ".",
                          "--out", str(approval)))
    lines.append(_command("flwr", "run", ".", connection, "--run-config", run_config,
                          "--stream"))
    return lines


def connection_toml(name: str, control_address: str, ca_cert: Path) -> str:
    """The block to add to $FLWR_HOME/config.toml (default ~/.flwr) for `flwr` commands."""
    return (f'[superlink.{name}]\naddress = "{control_address}"\n'
            f'root-certificates = "{ca_cert}"\n')


def partner_command(superlink: str, ca_cert: Path, private_key: Path, scene: str,
                    data_path: Path, state_dir: Path, approvals: list[Path],
                    coordinator_key: Path, runtime_port: int = SUPERNODE_RUNTIME_PORT) -> str:
    """The one command a partner runs next to its data: fedscene's executor, which starts
    the partner's SuperNode (`--isolation process`: it runs no app itself) and runs the
    ClientApp for it, warm and only for apps the coordinator signed (`deploy.executor`)."""
    node_config = (f'scene="{scene}" data-path="{data_path}" state-dir="{state_dir}"')
    approved = [part for path in approvals for part in ("--approval", str(path))]
    return _command("fedscene", "deploy", "serve", *approved,
                    "--coordinator-key", str(coordinator_key), "--",
                    "flower-supernode", "--superlink", superlink,
                    "--root-certificates", str(ca_cert),
                    "--auth-supernode-private-key", str(private_key),
                    "--node-config", node_config, "--isolation", "process",
                    "--port", str(runtime_port))
