"""Run one federated arm on Flower's simulation engine (Ray backend), in-process."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fedscene.common.config import ExperimentConfig
from fedscene.common.layout import ArmLayout
from fedscene.server.app import server_app_for
from fedscene.server.federation import FederationOutcome
from fedscene.server.strategy import ReplyObserver

# Set for the simulation's processes when an arm runs (not at import): no update check,
# Ray's logs as they are, and Ray's notice on every start that it will stop overriding
# accelerator variables when num_gpus=0 silenced by opting in now (fedscene uses no GPU).
SIMULATION_ENVIRONMENT = {"FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_DEDUP_LOGS": "0",
                          "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


class _HideRunSimulationNotice(logging.Filter):
    """`run_simulation` is the in-process Python API fedscene drives on purpose; Flower
    prints a deprecation notice for it on every arm, which is noise to fedscene's users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def run_arm(config: ExperimentConfig, *, algorithm: str, out_dir: Path, seed: int, run_id: str,
            observer: ReplyObserver | None = None, verbose: bool = False) -> FederationOutcome:
    """One Flower simulation: a node per scene of `config.data.scenes` (which must be set)."""
    for name, value in SIMULATION_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    from flwr.simulation import run_simulation  # imports Ray; keep `fedscene --help` fast

    from fedscene.client.app import app as client_app

    scenes = config.data.scenes
    record = ArmLayout(out_dir).federation_json
    record.unlink(missing_ok=True)
    server = server_app_for(config, algorithm=algorithm, num_nodes=len(scenes),
                            out_dir=out_dir, seed=seed, run_id=run_id, observer=observer)
    simulation = config.simulation
    backend = {
        "client_resources": {"num_cpus": simulation.client_num_cpus, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": max(1, os.cpu_count() or 1),
            "object_store_memory": simulation.object_store_mb * 1024 * 1024,
            "log_to_driver": verbose,
            "logging_level": "info" if verbose else "error",
        },
    }
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    notice = _HideRunSimulationNotice()
    flwr_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    flwr_logger.addFilter(notice)
    try:
        run_simulation(server_app=server, client_app=client_app, num_supernodes=len(scenes),
                       backend_config=backend)
    finally:
        flwr_logger.setLevel(level)
        flwr_logger.removeFilter(notice)
    if not record.exists():
        raise RuntimeError(f"the {algorithm} simulation ended without a result ({record}); "
                           f"rerun with --verbose to see Flower's log")
    return FederationOutcome.read(record)
