"""A scene's state directory: what must survive rounds, runs and process restarts.

    local.pt      the parameters that never leave the scene (its head; all of the model for
                  `local`), written atomically
    status.json   last round trained, run id, and the ledger head the state was saved with
    privacy.json  the privacy plan: budget and the noise calibrated once for it
    ledger.jsonl  the hash-chained privacy ledger
    eval/         per-user evaluation results per round (stay with the scene)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from fedscene.common.errors import FedsceneError
from fedscene.common.ledger import LEDGER_FILE

PLAN_FILE = "privacy.json"
STATUS_FILE = "status.json"
EVAL_DIR = "eval"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def params_digest(params: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and values, to show a round starts where the last one ended."""
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode("utf-8"))
        digest.update(params[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class SceneState:
    """Reads and writes one scene's state directory."""

    def __init__(self, directory: str | Path, scene: str) -> None:
        self.directory = Path(directory)
        self.scene = scene
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def ledger_path(self) -> Path:
        return self.directory / LEDGER_FILE

    def _read_json(self, name: str) -> dict[str, Any] | None:
        path = self.directory / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise FedsceneError(f"{path}: corrupt state file ({error}); restore it from a "
                                f"backup or remove the state directory to start over") from None

    def _write_json(self, name: str, value: dict[str, Any]) -> None:
        _atomic_write(self.directory / name, json.dumps(value, indent=2).encode("utf-8"))

    def load_local(self) -> dict[str, torch.Tensor] | None:
        path = self.directory / "local.pt"
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for a damaged file
            raise FedsceneError(f"{path}: cannot read the scene's local parameters ({error}); "
                                f"restore it from a backup or remove the state directory") from None

    def save_local(self, params: dict[str, torch.Tensor], status: dict[str, Any]) -> None:
        """Parameters first, then the status that points at them (both atomic)."""
        buffer = io.BytesIO()
        torch.save({k: v.detach().clone() for k, v in params.items()}, buffer)
        _atomic_write(self.directory / "local.pt", buffer.getvalue())
        self._write_json(STATUS_FILE, status)

    def status(self) -> dict[str, Any]:
        return self._read_json(STATUS_FILE) or {}

    def plan(self) -> dict[str, Any] | None:
        return self._read_json(PLAN_FILE)

    def save_plan(self, plan: dict[str, Any]) -> None:
        self._write_json(PLAN_FILE, plan)

    def evaluation_files(self) -> list[Path]:
        """The saved evaluations, oldest round first."""
        return sorted((self.directory / EVAL_DIR).glob("round_*.json"))

    def save_evaluation(self, round_: int, result: dict[str, Any]) -> None:
        folder = self.directory / EVAL_DIR
        folder.mkdir(exist_ok=True)
        _atomic_write(folder / f"round_{round_:04d}.json", json.dumps(result).encode("utf-8"))
