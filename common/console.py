"""The terminal every command prints to."""

from __future__ import annotations

import sys

from rich.console import Console

# Wide enough for tables when output is piped (rich falls back to 80 columns).
console = Console() if sys.stdout.isatty() else Console(width=120)
