"""The privacy ledger: append-only JSON lines, one per training call, hash-chained.

Each entry carries `index`, `prev_hash` and `hash` (SHA-256 of the entry's canonical JSON
without `hash`). An edited entry breaks its hash, a deleted or reordered one breaks the
chain, and a line without its final newline is a torn write. A scene's state records the
hash of the last entry it wrote, so a deleted tail is caught too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
LEDGER_FILE = "ledger.jsonl"
TRAINING = "training"  # entry kinds: a DP mechanism that ran, or values released without DP
RELEASE = "release"


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class LedgerRead:
    """Entries that verified, and the problems found (empty when the chain is intact)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    torn_tail: bool = False

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def head(self) -> str:
        return self.entries[-1]["hash"] if self.entries else GENESIS


def read_ledger(path: str | Path) -> LedgerRead:
    """Parse and verify a ledger; never raises on content, reports problems instead."""
    result = LedgerRead()
    file = Path(path)
    if not file.exists():
        return result
    raw = file.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        result.torn_tail = True
        result.problems.append(f"{file}: line {len(lines)} has no final newline: a torn "
                               f"(half-written or truncated) entry")
        lines.pop()
    previous = GENESIS
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            result.problems.append(f"{file}: line {number} is not valid JSON (edited or torn)")
            break
        if entry.get("hash") != entry_hash(entry):
            result.problems.append(f"{file}: line {number} (round {entry.get('round')}): "
                                   f"content does not match its hash (edited)")
            break
        if entry.get("prev_hash") != previous or entry.get("index") != number - 1:
            result.problems.append(f"{file}: line {number} (index {entry.get('index')}): "
                                   f"chain broken (an entry was deleted, inserted or reordered)")
            break
        result.entries.append(entry)
        previous = entry["hash"]
    return result


def append_entry(path: str | Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Chain `fields` to the ledger's last entry and append it durably (fsync)."""
    current = read_ledger(path)
    if not current.intact:
        raise ValueError("; ".join(current.problems))
    entry = dict(fields)
    entry["index"] = len(current.entries)
    entry["prev_hash"] = current.head
    entry["hash"] = entry_hash(entry)
    line = json.dumps(entry, sort_keys=True, separators=(",", ":"), allow_nan=True) + "\n"
    # One write of a whole line, then fsync: a crash leaves at most a torn last line,
    # which `read_ledger` reports and the client quarantines.
    with open(path, "ab") as handle:
        handle.write(line.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    return entry


def quarantine_torn_tail(path: str | Path) -> Path | None:
    """Move a torn last line (a crash mid-append) aside so the chain can continue.

    The torn entry's training was never saved nor sent (the reply follows the ledger write
    and the state save), so dropping it from the chain loses no released information.
    """
    file = Path(path)
    raw = file.read_bytes() if file.exists() else b""
    if not raw or raw.endswith(b"\n"):
        return None
    cut = raw.rfind(b"\n") + 1
    aside = file.with_name(f"{file.name}.torn-{len(raw)}")
    aside.write_bytes(raw[cut:])
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_bytes(raw[:cut])
    os.replace(tmp, file)
    return aside
