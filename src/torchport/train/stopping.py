"""Early stopping: end training when a metric has not improved for ``patience`` epochs.

The counters live in the checkpoint's ``Position`` (``stop_best``, ``stale_epochs``, ``stopped_epoch``), so a
resumed run stops at the same epoch as one left alone. Every rank sees the same epoch record (metrics are
reduced over ranks), so every rank takes the same decision and no collective is left waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchport.config import EarlyStoppingConfig
from torchport.errors import ConfigError
from torchport.train.resume import Position
from torchport.train.tasks import TaskAdapter


@dataclass(frozen=True)
class Stopping:
    metric: str
    mode: str  # min or max
    patience: int
    min_delta: float


def record_metrics(task: TaskAdapter, has_val: bool) -> list[str]:
    """The names an epoch record holds that a run can stop on."""
    return ["train_loss", *(["val_loss", f"val_{task.metric}"] if has_val else [])]


def make_stopping(config: EarlyStoppingConfig | None, task: TaskAdapter, has_val: bool) -> Stopping | None:
    """``train.early_stopping`` checked against the metrics this run records; None when it is off."""
    if config is None:
        return None
    known = record_metrics(task, has_val)
    metric = config.metric or known[-1]  # the task's validation metric (train_loss when there is no val split)
    if metric not in known:
        raise ConfigError(
            f"train.early_stopping.metric: '{metric}' is not recorded by this run; one of {', '.join(known)}"
        )
    mode = config.mode if config.mode != "auto" else ("max" if metric.endswith("accuracy") else "min")
    return Stopping(metric, mode, config.patience, config.min_delta)


def update_stopping(stopping: Stopping | None, position: Position, record: dict[str, Any]) -> bool:
    """Count the epoch just recorded (``position.epoch`` is still its index); True when training should stop."""
    if stopping is None:
        return False
    value = float(record[stopping.metric])
    best = position.stop_best
    sign = 1.0 if stopping.mode == "max" else -1.0
    if best is None or sign * (value - best) > stopping.min_delta:
        position.stop_best, position.stale_epochs = value, 0
        return False
    position.stale_epochs += 1
    if position.stale_epochs >= stopping.patience:
        position.stopped_epoch = position.epoch
        return True
    return False


def stopping_summary(stopping: Stopping | None, position: Position) -> dict[str, Any] | None:
    if stopping is None:
        return None
    return {
        "metric": stopping.metric,
        "mode": stopping.mode,
        "patience": stopping.patience,
        "min_delta": stopping.min_delta,
        "best_value": position.stop_best,
        "stopped": position.stopped_epoch is not None,
        "stopped_epoch": position.stopped_epoch,
    }
