"""Values as JSON can hold them: results and audits are written with it."""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """Non-finite floats as strings ('inf') or None (NaN), numpy scalars as Python ones."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):
        return json_safe(value.item())
    return value
