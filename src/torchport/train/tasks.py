"""Classification and regression differ in loss, metric and output scaling; this is the one place they do."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from torchport.config import TrainConfig
from torchport.data import DataSplits
from torchport.errors import ConfigError

REGRESSION_LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss, "smooth_l1": nn.SmoothL1Loss}


@dataclass
class TaskAdapter:
    """Loss on training batches and metrics on whole splits.

    Regression targets are standardised with the training split's statistics before the loss (so the loss is
    scale-free); the reported RMSE is in the target's own units.
    """

    kind: str
    criterion: nn.Module
    target_mean: torch.Tensor | None = None
    target_std: torch.Tensor | None = None

    @property
    def metric(self) -> str:
        return "accuracy" if self.kind == "classification" else "rmse"

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "classification"

    def _scaled(self, targets: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return targets
        assert self.target_mean is not None and self.target_std is not None
        return (targets - self.target_mean.to(targets.device)) / self.target_std.to(targets.device)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss: torch.Tensor = self.criterion(outputs, self._scaled(targets))
        return loss

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        loss = float(self.loss(outputs, targets))
        if self.kind == "classification":
            return {"loss": loss, "accuracy": float((outputs.argmax(dim=1) == targets).float().mean())}
        assert self.target_mean is not None and self.target_std is not None
        predictions = outputs * self.target_std + self.target_mean
        return {"loss": loss, "rmse": float(torch.sqrt(((predictions - targets) ** 2).mean()))}


def make_task(config: TrainConfig, data: DataSplits) -> TaskAdapter:
    if data.task == "classification":
        if config.loss not in ("auto", "cross_entropy"):
            raise ConfigError(f"train.loss: '{config.loss}' does not fit a classification task; use cross_entropy")
        return TaskAdapter("classification", nn.CrossEntropyLoss(label_smoothing=config.label_smoothing))
    if config.loss == "cross_entropy":
        raise ConfigError("train.loss: cross_entropy does not fit a regression task; use mse, l1 or smooth_l1")
    criterion = REGRESSION_LOSSES["mse" if config.loss == "auto" else config.loss]()
    assert data.target_mean is not None and data.target_std is not None
    return TaskAdapter(
        "regression",
        criterion,
        torch.as_tensor(data.target_mean, dtype=torch.float32),
        torch.as_tensor(data.target_std, dtype=torch.float32),
    )
