"""Where every file of a run directory lives: the one owner of its layout.

```
run.json  results.json  rounds.csv  report.md  report.html  audit.md  (+ the plots)
arms/<arm>-seed<s>/federation.json            what the server saw
arms/<arm>-seed<s>/checkpoints/round_NNNN.pt  global shared parameters after each round
arms/<arm>-seed<s>/scenes/<scene>/            each scene's state directory
transfer/<target>/<arm>-k<k>-seed<s>/         a target's state for one adaptation
```

A scene's state directory (its head, plan, ledger, status and evaluations) is laid out by
`client.state.SceneState`; the ServerApp tells clients only the root their state
directories hang from (`ArmLayout.scenes`), and each finds its own with `scene_directory`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


def scene_dirname(scene: str) -> str:
    """A file-system-safe folder name for a scene's state directory."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", scene).strip("_") or "scene"


def scene_directory(state_root: Path | str, scene: str) -> Path:
    """The state directory of `scene` under a root of state directories."""
    return Path(state_root) / scene_dirname(scene)


@dataclass(frozen=True)
class ArmLayout:
    """One arm and seed's federation: its record, checkpoints and scene states."""

    root: Path

    @property
    def federation_json(self) -> Path:
        return self.root / "federation.json"

    @property
    def scenes(self) -> Path:
        """The root of the scenes' state directories."""
        return self.root / "scenes"

    def scene(self, scene: str) -> Path:
        return scene_directory(self.scenes, scene)

    def checkpoint(self, server_round: int) -> Path:
        """The global shared parameters after `server_round` (0: the start)."""
        return self.root / "checkpoints" / f"round_{server_round:04d}.pt"


@dataclass(frozen=True)
class RunLayout:
    """A simulation's run directory."""

    root: Path

    run_json = property(lambda self: self.root / "run.json")
    results_json = property(lambda self: self.root / "results.json")
    rounds_csv = property(lambda self: self.root / "rounds.csv")
    report_md = property(lambda self: self.root / "report.md")
    report_html = property(lambda self: self.root / "report.html")
    audit_md = property(lambda self: self.root / "audit.md")

    def plot(self, name: str) -> Path:
        """A plot of the report, beside it (`name` without extension)."""
        return self.root / f"{name}.png"

    def arm(self, label: str, seed: int) -> ArmLayout:
        return ArmLayout(self.root / "arms" / f"{label}-seed{seed}")

    def arms(self) -> list[ArmLayout]:
        """Every arm and seed the run directory holds."""
        return [ArmLayout(path) for path in sorted((self.root / "arms").glob("*-seed*"))
                if path.is_dir()]

    def transfer(self, target: str, arm: str, shots: int | str, seed: int) -> Path:
        """The target's state directory for one adaptation (`shots` k, or "all")."""
        return self.root / "transfer" / scene_dirname(target) / f"{arm}-k{shots}-seed{seed}"
