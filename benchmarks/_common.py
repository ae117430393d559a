"""Shared helpers of the benchmark scripts: a results folder and a JSON writer."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps({"machine": machine()} | payload, indent=2))
    return path
