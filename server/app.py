"""The Flower ServerApp, for `flwr run .` and for the simulation harness.

Run config keys (pyproject `[tool.flwr.app.config]` or `--run-config`): `config-path` (a
fedscene TOML; empty for the defaults), `out-dir`, `algorithm`, `num-nodes` (used when
the config names no scenes).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedscene.common.algorithms import DEPLOYMENT_DEFAULT
from fedscene.common.config import ExperimentConfig, load_config, refuse_reproducible_noise
from fedscene.common.errors import ConfigError
from fedscene.server.federation import run_federation
from fedscene.server.strategy import ReplyObserver

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of `flwr run`: everything comes from the run config."""
    run_config = context.run_config
    config = load_config(str(run_config.get("config-path", "")) or None)
    refuse_reproducible_noise(config, str(run_config.get("config-path", "")) or "defaults")
    nodes = (len(config.data.scenes) or int(run_config.get("num-nodes", 0))
             or connected_nodes(grid))
    run_federation(grid, config, algorithm=str(run_config.get("algorithm", DEPLOYMENT_DEFAULT)),
                   num_nodes=nodes, out_dir=Path(str(run_config.get("out-dir", "fedscene-run"))),
                   seed=config.simulation.seeds[0], run_id=uuid.uuid4().hex)


def connected_nodes(grid: Grid, wait_s: float = 60.0, settle_s: float = 3.0,
                    clock=time.monotonic, sleep=time.sleep) -> int:
    """How many SuperNodes a run without `data.scenes` or `num-nodes` federates: those
    connected once their number has held for `settle_s` (a local simulation starts its
    nodes together), waiting up to `wait_s` for the first. Refuses when none connects:
    a run that trains nothing must not report "finished"."""
    deadline, count, since = clock() + wait_s, 0, clock()
    while True:
        now = len(list(grid.get_node_ids()))
        if now != count:
            count, since = now, clock()
        if count and clock() - since >= settle_s:
            return count
        if clock() >= deadline:
            if count:
                return count
            raise ConfigError(
                f"no SuperNode connected within {wait_s:.0f} s and the run names no scenes: "
                f"set data.scenes in the fedscene config (config-path), or num-nodes in the "
                f"run config (flwr run . --run-config num-nodes=N)")
        sleep(0.5)


def server_app_for(config: ExperimentConfig, *, algorithm: str, num_nodes: int, out_dir: Path,
                   seed: int, run_id: str, observer: ReplyObserver | None = None
                   ) -> ServerApp:
    """A ServerApp bound to an in-process config (the harness's). Its outcome is what it
    writes to `ArmLayout(out_dir).federation_json`, as any ServerApp's."""
    bound = ServerApp()

    @bound.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, config, algorithm=algorithm, num_nodes=num_nodes,
                       out_dir=out_dir, seed=seed, run_id=run_id, observer=observer)

    return bound
