"""Examples per second of plain SGD vs DP-SGD on the scene model, per Opacus grad-sample mode.

    python -m benchmarks.dp_step [--batch 256] [--seconds 15] [--scene kitchen]
        [--unit shopper|example] [--toy]

Each mode trains the same model on the same fixed batches of the embedded data, cut by the
privacy unit (`shopper`, the default: a batch of shoppers with up to 16 examples each;
`example`); DP modes clip per unit (noise 1.0). `ghost` uses fedscene's norm samplers;
`ghost-opacus-embedding` is the same with Opacus's own embedding sampler, for comparison.
Prints a table with the slowdown against plain SGD and writes
benchmarks/results/dp_step.json (`--toy`: a few steps of a small batch, for CI).
"""

from __future__ import annotations

import argparse
import copy
import resource
import time

import numpy as np
import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.grad_sample.embedding import compute_embedding_norm_sample
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks._common import write_json
from fedscene.common import dp_norms
from fedscene.common.config import DataConfig, ModelConfig, PrivacyConfig, TrainingConfig
from fedscene.common.data import build_scene, load_raw_dataset
from fedscene.common.model import SceneModel
from fedscene.common.privacy_units import Batch, PrivacyUnit, unit_of
from fedscene.common.training import DPSettings, ExampleLoss, make_private

MODES = ("plain", "ghost", "ghost-opacus-embedding", "hooks", "functorch", "ew")


def _norm_sampler(use_opacus: bool) -> None:
    sampler = compute_embedding_norm_sample if use_opacus else dp_norms.embedding_norm_sample
    GradSampleModuleFastGradientClipping.NORM_SAMPLERS[nn.Embedding] = sampler


def measure(mode: str, model: nn.Module, prepared: list[Batch], units: int,
            seconds: float) -> dict:
    work = copy.deepcopy(model)
    work.train()
    optimizer = torch.optim.SGD(work.parameters(), lr=0.1)
    criterion: nn.Module = ExampleLoss()
    module: nn.Module = work
    if mode != "plain":
        _norm_sampler(use_opacus=mode == "ghost-opacus-embedding")
        grad_mode = "ghost" if mode.startswith("ghost") else mode
        loader = DataLoader(TensorDataset(torch.arange(units)),
                            batch_size=len(prepared[0].labels))
        module, optimizer, criterion, _ = make_private(
            work, optimizer, loader, DPSettings(1.0, 1.0, grad_mode), criterion,
            torch.Generator())

    def step(batch: Batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(module(*batch.inputs), batch.labels, batch.weights).backward()
        optimizer.step()

    step(prepared[0])  # warm-up
    done, examples, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        batch = prepared[done % len(prepared)]
        step(batch)
        done += 1
        examples += (int((batch.weights > 0).sum()) if batch.weights is not None
                     else len(batch.labels))
    elapsed = time.perf_counter() - start
    _norm_sampler(use_opacus=False)
    return {"mode": mode, "steps": done, "seconds": elapsed,
            "examples_per_s": examples / elapsed, "ms_per_step": 1000 * elapsed / done,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def prepare(unit: PrivacyUnit, scene, negatives: int, batch: int, count: int
            ) -> list[Batch]:
    """`count` fixed batches of `batch` units each (seeded: a benchmark must repeat)."""
    rng = np.random.default_rng(0)
    units = unit.count(scene)
    return [unit.batch(scene, rng.choice(units, min(batch, units), replace=False), rng,
                       labelled=True, negatives=negatives) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--scene", default="kitchen")
    parser.add_argument("--unit", choices=("shopper", "example"), default="shopper")
    parser.add_argument("--toy", action="store_true", help="batch 16, 0.2 s a mode (CI)")
    args = parser.parse_args()
    if args.toy:
        args.batch, args.seconds = 16, 0.2
    torch.manual_seed(0)
    data, model_config = DataConfig(), ModelConfig()
    scene = build_scene(load_raw_dataset(data), args.scene, data, model_config)
    negatives = data.train_negatives
    unit = unit_of(PrivacyConfig(unit=args.unit))
    prepared = prepare(unit, scene, negatives, args.batch, 8)
    model = SceneModel(model_config, scene.n_items)
    rows = []
    for mode in MODES:
        try:
            rows.append(measure(mode, model, prepared, unit.count(scene), args.seconds))
        except Exception as error:  # a mode Opacus cannot apply to this model
            rows.append({"mode": mode, "error": f"{type(error).__name__}: {error}"[:160]})
    plain = rows[0]["examples_per_s"]
    table = Table(title=f"DP-SGD step cost, scene model, batch {args.batch} {args.unit}s, "
                        f"{torch.get_num_threads()} threads")
    for column in ("mode", "examples/s", "ms/step", "slowdown vs plain",
                   "process peak MB (so far)"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for row in rows:
        if "error" in row:
            table.add_row(row["mode"], "-", "-", row["error"][:60], "-")
            continue
        row["slowdown"] = plain / row["examples_per_s"]
        table.add_row(row["mode"], f"{row['examples_per_s']:.0f}", f"{row['ms_per_step']:.1f}",
                      f"{row['slowdown']:.2f}x", f"{row['peak_rss_mb']:.0f}")
    Console(width=120).print(table)
    path = write_json("dp_step.json", {"batch": args.batch, "scene": args.scene,
                                       "unit": args.unit, "toy": args.toy,
                                       "target_slowdown": 1.5, "rows": rows,
                                       "model": model_config.model_dump(),
                                       TrainingConfig.__name__: TrainingConfig().model_dump()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
