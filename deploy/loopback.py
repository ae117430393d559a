"""A whole deployment on one machine: a SuperLink and partner SuperNodes on loopback.

Used to rehearse a campaign before involving partners, by the deployment tests and by
benchmarks/deployment.py. It runs exactly the commands `fedscene deploy` prints, with TLS
and SuperNode authentication. Each process starts in its own session and `close()` kills
whole process groups (a SuperNode's SuperExec and ClientApp processes included).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedscene.deploy.app_signing import fab_of, make_signing_key, sign_fab
from fedscene.deploy.commands import connection_toml, coordinator_commands, partner_command
from fedscene.deploy.credentials import make_certificates, make_partner_key

BIN = Path(sys.executable).parent
CONNECTION = "fedscene"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Partner:
    name: str
    scene: str
    data: Path

    def state_dir(self, root: Path) -> Path:
        return root / self.name / "state"


def embedded_partners(root: Path, countries: dict[str, str]) -> list[Partner]:
    """One partner per `name: country`, each holding only its country's rows of the
    embedded Online Retail slice in `<root>/<name>/retail.csv`."""
    import pandas as pd

    from fedscene.common.data.sources import embedded_path

    retail = pd.read_csv(embedded_path(), dtype=str)
    partners = []
    for name, country in countries.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        data = root / name / "retail.csv"
        retail[retail["Country"] == country].to_csv(data, index=False)
        partners.append(Partner(name, country, data))
    return partners


class LoopbackFederation:
    """Certificates, keys, a SuperLink and SuperNodes under `root`; a context manager.

    `approved_apps`: the app folders the coordinator signs (`deploy sign-app`) before any
    partner starts (at least one); partners' executors run only those.
    """

    def __init__(self, root: Path, partners: list[Partner], extra_keys: tuple[str, ...] = (),
                 approved_apps: tuple[Path, ...] = ()) -> None:
        self.root = root
        self.partners = {p.name: p for p in partners}
        self.certs = make_certificates(root / "certs", ["localhost", "127.0.0.1"])
        self.keys = {name: make_partner_key(root / "keys", name)
                     for name in [*self.partners, *extra_keys]}
        app_key, self.app_public_key = make_signing_key(root / "keys")
        self.approvals = []
        for index, app in enumerate(approved_apps):
            self.approvals.append(root / f"approval-{index}.json")
            sign_fab(fab_of(app), app_key).write(self.approvals[-1])
        self.port = free_port()
        home = root / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            + connection_toml(CONNECTION, f"127.0.0.1:{self.port}", self.certs.ca_cert))
        # Flower's processes start others by name (a SuperNode its flwr-clientapp): the
        # tools of this interpreter's environment come first, whether or not it is active.
        path = os.pathsep.join([str(BIN), os.environ.get("PATH", "")])
        self.env = os.environ | {"FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1",
                                 "PATH": path}
        self.started: list[tuple[subprocess.Popen, IO[bytes]]] = []

    def __enter__(self) -> LoopbackFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (closed in close())
        process = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=self.root,
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.started.append((process, log))
        return process

    def start_superlink(self, timeout: float = 60.0) -> None:
        """Start the SuperLink and register every partner's key."""
        printed = coordinator_commands(self.certs.ca_cert.parent, self.root / "superlink.db",
                                       [], listen="127.0.0.1", port=self.port)
        line = next(line for line in printed if line.startswith("flower-superlink"))
        self.start("superlink", shlex.split(line.removesuffix(" &")))
        deadline = time.time() + timeout
        names = list(self.partners)
        while not self.register(names[0]):
            if time.time() > deadline:
                raise RuntimeError(f"SuperLink did not come up; see {self.root}/superlink.log")
            time.sleep(1)
        for name in names[1:]:
            if not self.register(name):
                raise RuntimeError(f"could not register {name}")

    def register(self, name: str) -> bool:
        done = subprocess.run([str(BIN / "flwr"), "supernode", "register",
                               str(self.keys[name][1]), CONNECTION], env=self.env,
                              capture_output=True, text=True, timeout=60)
        return done.returncode == 0 and "registered successfully" in done.stdout

    def start_partner(self, name: str, *extra: str, scene: str | None = None,
                      with_ca: bool = True) -> subprocess.Popen:
        """`fedscene deploy partner`'s command for `name` (optionally without the CA)."""
        partner = self.partners.get(name, Partner(name, scene or "none", self.root / "none"))
        args = shlex.split(partner_command(
            f"127.0.0.1:{self.port}", self.certs.ca_cert, self.keys[name][0],
            scene or partner.scene, partner.data, partner.state_dir(self.root),
            self.approvals, self.app_public_key, runtime_port=free_port()))
        if not with_ca:
            at = args.index("--root-certificates")
            del args[at:at + 2]
        return self.start(name, [*args, *extra])

    def run(self, app_dir: Path, config: Path, algorithm: str, out_dir: Path
            ) -> subprocess.Popen:
        """`flwr run` of the fedscene app against this SuperLink (streams to flwr-run.log)."""
        run_config = f'config-path="{config}" algorithm="{algorithm}" out-dir="{out_dir}"'
        return self.start("flwr-run", ["flwr", "run", str(app_dir), CONNECTION, "--stream",
                                       "--run-config", run_config])

    def stop(self, process: subprocess.Popen) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left in it."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # children outliving their leader

    def close(self) -> None:
        for process, log in reversed(self.started):
            self.stop(process)
            log.close()
        self.started.clear()
