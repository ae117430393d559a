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

POPULARITY = "popularity"  # in a train reply: the scene's released prior counts by item
POOLED = "pooled-popularity"  # to a scene: the sum of the scenes' POPULARITY by item
ITEM_KEYS = "keys"  # in both: hashed item keys (int64)
COUNTS = "counts"  # in both: counts (float64), one per key
