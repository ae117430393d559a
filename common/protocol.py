"""Keys of the messages ServerApp and ClientApp exchange."""

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
LEDGER_HEAD = "ledger-head"  # in a reply's status: the hash of the scene's last ledger entry
NUM_EXAMPLES = "num-examples"
TRAINED = "trained"
BUDGET_EXHAUSTED = "budget-exhausted"
TOO_FEW_UNITS = "too-few-units"  # under DP, fewer than privacy.min_units: keeps its start

