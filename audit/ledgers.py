"""`fedscene audit`: verify privacy ledgers and recompute their epsilon independently.

For each ledger: verify the hash chain (and, next to a scene state, that the entry the
state was saved with is still there); recompute epsilon from the mechanism records alone
(noise, sample rate, steps, delta) with Opacus PRV at every training entry, and at the last
also with Opacus RDP and Google's dp-accounting PLD; compare with what was recorded and with
the budget. State what the recomputed epsilon means for one purchase and one shopper under
the ledger's privacy unit (group privacy), and list what was released without DP.

Verdicts, worst first: altered, under-reported, not private (noise drawn from a seed other
parties know), over budget, no DP, released without DP (declared releases outside the
mechanism), near budget, ok; only the last two pass.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedscene.common.accounting import compress, epsilon, pld_epsilon
from fedscene.common.errors import FedsceneError
from fedscene.common.jsonable import json_safe
from fedscene.common.ledger import LEDGER_FILE, RELEASE, TRAINING, read_ledger
from fedscene.common.privacy_units import meaning
from fedscene.common.randomness import SECRET

UNDER_REPORT_TOLERANCE = 0.02  # relative: PRV/PLD discretisation differs by well under 1%
VERDICT_ORDER = ("altered", "under-reported", "not private", "over budget", "no DP",
                 "released without DP", "near budget", "ok")


@dataclass
class LedgerAudit:
    """One ledger's audit: what it records, what was recomputed, and the verdict."""

    ledger: str
    scene: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    rounds: int = 0
    steps: int = 0
    sample_rate: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    delta: float | None = None
    budget_epsilon: float | None = None
    epsilon_recorded: float | None = None
    epsilon_prv: float | None = None
    epsilon_pld: float | None = None
    epsilon_rdp: float | None = None
    remaining: float | None = None
    unit: str | None = None
    per_purchase: str | None = None
    per_shopper: str | None = None
    releases_without_dp: list[str] = field(default_factory=list)
    per_entry: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict in ("ok", "near budget")


@lru_cache(maxsize=4096)
def _cached(composition: tuple[tuple[float, float, int], ...], delta: float, how: str) -> float:
    if how == "pld":
        return pld_epsilon(list(composition), delta)
    return epsilon(list(composition), delta, how)


def _epsilon(history: list[tuple[float, float, int]], delta: float, how: str) -> float:
    if any(sigma <= 0 for sigma, _, _ in history):
        return math.inf
    return _cached(tuple(sorted(compress(history))), delta, how)


def find_ledgers(paths: list[str | Path]) -> list[Path]:
    """Ledger files named directly, or found under state or run directories."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob(LEDGER_FILE))
        else:
            raise FedsceneError(f"{path}: no such file or directory; give a state directory, a "
                                f"run directory or a {LEDGER_FILE} file")
    if not found:
        raise FedsceneError(f"no {LEDGER_FILE} under {', '.join(map(str, paths))}")
    return found


def _tail_problem(ledger_path: Path, entries: list[dict[str, Any]]) -> str | None:
    status = ledger_path.parent / "status.json"
    if not status.exists():
        return None
    try:
        head = json.loads(status.read_text()).get("ledger_head")
    except json.JSONDecodeError:
        return f"{status}: unreadable, cannot check the ledger's tail"
    if head and head not in {e["hash"] for e in entries}:
        return (f"{ledger_path}: the state was saved after an entry that is no longer in the "
                f"ledger (entries deleted from the end, or the chain rewritten)")
    return None


def audit_ledger(path: Path, near: float = 0.9) -> LedgerAudit:
    """Audit one ledger file."""
    read = read_ledger(path)
    entries = read.entries
    scene = entries[0]["scene"] if entries else path.parent.name
    result = LedgerAudit(ledger=str(path), scene=scene, verdict="ok")
    result.reasons += read.problems
    tail = _tail_problem(path, entries)
    if tail:
        result.reasons.append(tail)
    integrity_problems = len(result.reasons)
    altered = integrity_problems > 0
    if not entries:
        result.verdict = "altered" if altered else "ok"
        return result
    result.releases_without_dp = sorted({name for e in entries if e.get("kind") == RELEASE
                                         for name in e["released"]})
    training = [e for e in entries if e.get("kind", TRAINING) == TRAINING]
    if not training:
        result.verdict = "altered" if altered else "ok"
        return result
    last = training[-1]
    history: list[tuple[float, float, int]] = []
    for entry in training:
        history.append((float(entry["noise_multiplier"]), float(entry["sample_rate"]),
                        int(entry["steps"])))
        recomputed = _epsilon(history, float(entry["delta"]), "prv")
        recorded = float(entry["epsilon"])
        result.per_entry.append({"index": entry["index"], "round": entry["round"],
                                 "run_id": entry.get("run_id"), "epsilon_recorded": recorded,
                                 "epsilon_prv": recomputed})
        if math.isfinite(recomputed) and recorded < recomputed * (1 - UNDER_REPORT_TOLERANCE):
            result.reasons.append(
                f"entry {entry['index']} (round {entry['round']}): epsilon recorded "
                f"{recorded:.4f} is below the recomputed {recomputed:.4f}")
    delta = float(last["delta"])
    result.rounds = len(training)
    result.steps = sum(h[2] for h in history)
    result.sample_rate, result.noise_multiplier = history[-1][1], history[-1][0]
    result.max_grad_norm, result.delta = last.get("max_grad_norm"), delta
    result.budget_epsilon = float(last.get("budget_epsilon", math.inf))
    result.epsilon_recorded = float(last["epsilon"])
    result.epsilon_prv = result.per_entry[-1]["epsilon_prv"]
    result.epsilon_rdp = _epsilon(history, delta, "rdp")
    result.epsilon_pld = _epsilon(history, delta, "pld")
    if math.isfinite(result.epsilon_pld) and result.epsilon_recorded < result.epsilon_pld * (
            1 - UNDER_REPORT_TOLERANCE):
        result.reasons.append(f"last entry: epsilon recorded {result.epsilon_recorded:.4f} is "
                              f"below dp-accounting PLD's {result.epsilon_pld:.4f}")
    spent = max(result.epsilon_prv, result.epsilon_recorded)
    result.remaining = result.budget_epsilon - spent
    under_reported = len(result.reasons) > integrity_problems
    _unit_meaning(result, last, spent, delta)
    predictable = [e for e in training if e.get("noise_source") != SECRET
                   and float(e["noise_multiplier"]) > 0]
    if predictable:
        shown = [e["index"] for e in predictable[:5]]
        result.reasons.append(
            f"entries {shown}{'...' if len(predictable) > 5 else ''}: noise and sampling "
            f"were drawn from a seed other parties know "
            f"({predictable[0].get('noise_source', 'source not recorded')}); whoever knows "
            f"it can remove the noise")
    if result.releases_without_dp:
        result.reasons.append("released without DP (declared in the ledger): "
                              + ", ".join(result.releases_without_dp))
    result.verdict = _verdict(result, spent, near, altered, under_reported, bool(predictable))
    return result


def _unit_meaning(result: LedgerAudit, last: dict[str, Any], spent: float, delta: float
                  ) -> None:
    """What the recomputed epsilon guarantees for one purchase and for one shopper."""
    result.unit = last.get("unit")
    groups = last.get("group_sizes")
    if not groups or not math.isfinite(spent):
        return
    described = meaning(spent, delta, groups)
    result.per_purchase, result.per_shopper = described["purchase"], described["shopper"]


def _verdict(result: LedgerAudit, spent: float, near: float, altered: bool,
             under_reported: bool, predictable: bool) -> str:
    if altered:
        return "altered"
    if under_reported:
        return "under-reported"
    if predictable:
        return "not private"
    if math.isinf(spent):
        return "no DP"
    if spent > result.budget_epsilon * (1 + 1e-9):
        result.reasons.append(f"epsilon {spent:.4f} exceeds the budget "
                              f"{result.budget_epsilon:.4f}")
        return "over budget"
    if result.releases_without_dp:
        return "released without DP"
    if spent >= near * result.budget_epsilon:
        return "near budget"
    return "ok"


def audit(paths: list[str | Path], near: float = 0.9, jobs: int = 1) -> list[LedgerAudit]:
    """Audit every ledger under `paths`, in parallel processes when `jobs` > 1."""
    ledgers = find_ledgers(paths)
    if jobs > 1 and len(ledgers) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(audit_ledger, ledgers, [near] * len(ledgers)))
    return [audit_ledger(path, near) for path in ledgers]


def to_json(results: list[LedgerAudit]) -> str:
    return json.dumps({"passed": all(r.passed for r in results),
                       "ledgers": [json_safe(asdict(r)) for r in results]}, indent=2)
