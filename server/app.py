"""The Flower ServerApp, for `flwr run .` and for the simulation harness.

Run config keys (pyproject `[tool.flwr.app.config]` or `--run-config`): `config-path` (a
fedscene TOML; empty for the defaults), `out-dir`, `algorithm`, `num-nodes` (used when
the config names no scenes).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedscene.common.algorithms import DEPLOYMENT_DEFAULT
from fedscene.common.config import ExperimentConfig, load_config, refuse_reproducible_noise
from fedscene.server.federation import run_federation
from fedscene.server.strategy import ReplyObserver

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of `flwr run`: everything comes from the run config."""
    run_config = context.run_config
    config = load_config(str(run_config.get("config-path", "")) or None)
    refuse_reproducible_noise(config, str(run_config.get("config-path", "")) or "defaults")
    nodes = len(config.data.scenes) or int(run_config.get("num-nodes", 0))
    run_federation(grid, config, algorithm=str(run_config.get("algorithm", DEPLOYMENT_DEFAULT)),
                   num_nodes=nodes, out_dir=Path(str(run_config.get("out-dir", "fedscene-run"))),
                   seed=config.simulation.seeds[0], run_id=uuid.uuid4().hex)


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
