"""Keys of the messages ServerApp and ClientApp exchange, and the state-directory naming
both sides (and the harness) agree on."""

import re

CONFIG_RECORD = "config"
CONFIG_JSON = "fedscene-config"
ALGORITHM = "algorithm"
RUN_ID = "run-id"
SEED = "seed"
STATE_ROOT = "state-root"
SERVER_ROUND = "server-round"

ARRAYS = "arrays"
METRICS = "metrics"
STATUS = "status"
NUM_EXAMPLES = "num-examples"
TRAINED = "trained"
BUDGET_EXHAUSTED = "budget-exhausted"


def scene_dirname(scene: str) -> str:
    """A file-system-safe folder name for a scene's state directory."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", scene).strip("_") or "scene"
