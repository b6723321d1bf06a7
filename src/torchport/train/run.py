"""One training run's parts (``Training``), and what the loop derives from them: the best epoch, the summary.

Kept apart from loop.py so that the loop stays readable top to bottom and short.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchport.config import Config
from torchport.data import DataSplits
from torchport.models.spec import ModelMeta
from torchport.train.distributed import World
from torchport.train.precision import Precision
from torchport.train.resume import Position
from torchport.train.sampling import EpochBatchSampler
from torchport.train.stopping import Stopping, stopping_summary
from torchport.train.tasks import TaskAdapter


@dataclass
class Training:
    """One run's parts, built once; the loop then only moves ``position`` (and the sample count) forward."""

    config: Config
    run_dir: Path
    world: World
    device: torch.device
    data: DataSplits
    meta: ModelMeta
    model: nn.Module  # the plain module: checkpoints and evaluation read it
    network: nn.Module  # what the forward pass runs: ``model`` itself, or its DDP / DataParallel wrapper
    task: TaskAdapter
    sampler: EpochBatchSampler
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scheduler_interval: str | None  # "step" or "epoch"
    config_hash: str
    precision: Precision
    stopping: Stopping | None
    position: Position = field(default_factory=Position)
    started: float = 0.0  # perf_counter() when the first step began
    trained_samples: int = 0  # by this rank, since ``started``


def update_best(position: Position, record: dict[str, Any], task: TaskAdapter) -> bool:
    value = record.get(f"val_{task.metric}", record["train_loss"])
    better = position.best_value is None or (
        value > position.best_value
        if task.higher_is_better and f"val_{task.metric}" in record
        else value < position.best_value
    )
    if better:
        position.best_value, position.best_epoch = float(value), position.epoch
    return better


def run_summary(run: Training, trained_samples: int, elapsed: float) -> dict[str, Any]:
    """``trained_samples`` counts all ranks; ``batch_size`` is per process, so the global batch is world x it."""
    config, data, world = run.config, run.data, run.world
    lines = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    final = lines[-1] if lines else {}
    best = next((line for line in lines if line["epoch"] == run.position.best_epoch), final)
    return {
        "name": config.name,
        "config_hash": config.hash(),
        "task": data.task,
        "metric": f"val_{run.task.metric}",
        "epochs": config.train.epochs,
        "epochs_run": run.position.epoch,
        "steps": run.position.global_step,
        "precision": config.train.precision,
        "accumulate_steps": config.train.accumulate_steps,
        "early_stopping": stopping_summary(run.stopping, run.position),
        "final": final,
        "best": best,
        "samples_per_second": round(trained_samples / elapsed, 1) if elapsed > 0 else None,
        "train_seconds": round(elapsed, 3),
        "world_size": world.world_size,
        "strategy": world.strategy,
        "backend": world.backend,
        "batch_size_per_process": config.data.batch_size,
        "global_batch_size": config.data.batch_size * world.world_size,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "samples": {"train": len(data.train.x), "val": len(data.val.x), "test": len(data.test.x)},
        "skipped_images": len(data.skipped),
    }
