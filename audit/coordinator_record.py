"""Check a scene's ledger against the coordinator's record of it.

Every reply a scene sends carries the hash of its latest ledger entry, and the coordinator
keeps them (`federation.json`, `ledger_heads`: round, phase, scene, head). A partner can
rewrite its ledger and state consistently, re-chaining every hash, and the ledger alone
still verifies; but the hashes the coordinator recorded then no longer appear in it, or
appear out of order. `check_heads` finds that and marks the audit `rewritten`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedscene.audit.ledgers import LedgerAudit
from fedscene.common.errors import FedsceneError
from fedscene.common.ledger import GENESIS, read_ledger

REWRITTEN = "rewritten"


def recorded_heads(federation_json: Path) -> dict[str, list[dict[str, Any]]]:
    """The coordinator's record: per scene, the ledger heads its replies carried, in the
    order they arrived."""
    try:
        heads = json.loads(Path(federation_json).read_text()).get("ledger_heads")
    except (OSError, json.JSONDecodeError) as error:
        raise FedsceneError(f"{federation_json}: cannot read the coordinator's record "
                            f"({error}); give the federation.json the coordinator wrote") from None
    if heads is None:
        raise FedsceneError(f"{federation_json}: holds no 'ledger_heads'; it was written by a "
                            f"fedscene that did not record them")
    by_scene: dict[str, list[dict[str, Any]]] = {}
    for entry in heads:
        by_scene.setdefault(str(entry["scene"]), []).append(entry)
    return by_scene


def check_heads(result: LedgerAudit, heads: list[dict[str, Any]]) -> None:
    """Mark `result` rewritten unless every recorded head is an entry of its ledger, each
    at or after the one recorded before it (a ledger only grows)."""
    position = {entry["hash"]: i for i, entry in enumerate(read_ledger(result.ledger).entries)}
    position[GENESIS] = -1
    last = -1
    for recorded in heads:
        at = position.get(recorded["head"])
        if at is None or at < last:
            what = "does not hold" if at is None else "holds earlier than a later record"
            result.reasons.append(
                f"the coordinator recorded ledger head {recorded['head'][:12]} for round "
                f"{recorded['round']} ({recorded['phase']}), which this ledger {what}: it was "
                f"rewritten or truncated after it was reported")
            result.verdict = REWRITTEN
            return
        last = at


def check_against(results: list[LedgerAudit], federation_json: Path,
                  under: Path | None = None) -> int:
    """Check every audited ledger whose scene the record names (and, with `under`, that
    lies under that folder: one federation's state directories); returns how many were
    checked (the others' scenes did not take part in that federation)."""
    by_scene = recorded_heads(federation_json)
    checked = 0
    for result in results:
        if result.scene in by_scene and (under is None
                                         or Path(result.ledger).is_relative_to(under)):
            check_heads(result, by_scene[result.scene])
            checked += 1
    return checked
