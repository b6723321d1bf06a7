"""The module that is exported: raw inputs in, answers out.

The trained network already standardises its inputs (its first module holds the training statistics), so the
exported graph takes data exactly as the data source yields it. This wrapper adds what a caller wants at the
other end: probabilities beside the logits for classifiers, and de-normalised predictions for regression.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from torchport.config import Config, load_config
from torchport.errors import UsageError
from torchport.models.compose import build_model
from torchport.models.spec import ModelMeta, model_spec
from torchport.train.resume import load_trained_model


class Deployable(nn.Module):
    """Always returns a tuple: (logits, probabilities) for classification, (prediction,) for regression."""

    def __init__(
        self, model: nn.Module, task: str, target_mean: torch.Tensor | None, target_std: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.model = model
        self.classification = task == "classification"
        if not self.classification:
            assert target_mean is not None and target_std is not None
            self.register_buffer("target_mean", target_mean.float())
            self.register_buffer("target_std", target_std.float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        if self.classification:
            return out, torch.softmax(out, dim=-1)
        return (out * self.target_std + self.target_mean,)


@dataclass
class TrainedRun:
    """A run directory read back from disk: its config, checkpoint metadata and the model ready to export."""

    run_dir: Path
    config: Config
    meta: ModelMeta
    module: Deployable
    checkpoint_path: Path

    @property
    def output_names(self) -> list[str]:
        names = self.config.export.output_names
        if self.meta.task == "classification":
            return [names.logits, names.probabilities]
        return [names.prediction]

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.int64 if self.meta.input_dtype == "int64" else torch.float32

    def example_input(self, batch: int = 2) -> torch.Tensor:
        shape = (batch, *self.meta.input_shape)
        if self.input_dtype == torch.int64:
            return torch.zeros(shape, dtype=torch.int64)
        low, high = self.meta.input_min, self.meta.input_max
        return torch.rand(shape, generator=torch.Generator().manual_seed(0)) * (high - low) + low


def load_trained_run(run_dir: Path, which: str | None = None) -> TrainedRun:
    """Rebuild the trained model from ``run_dir/config.yaml`` and its best (or last) checkpoint."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no config.yaml); run `torchport train` first")
    config = load_config(config_path)
    checkpoint_path = run_dir / "checkpoints" / f"{which or config.export.checkpoint}.pt"
    meta, weights = load_trained_model(checkpoint_path)
    model = build_model(model_spec(config, meta))
    model.load_state_dict(weights)
    module = Deployable(model, meta.task, meta.target_mean, meta.target_std).eval()
    return TrainedRun(run_dir, config, meta, module, checkpoint_path)
