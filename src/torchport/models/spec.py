"""The model contract: what building a model needs of the data (``ModelSpec``), and what travels with the
weights so export and verification can rebuild and describe the model without reloading the data
(``ModelMeta``).

``ModelMeta`` is made once from the data when training starts and read by attribute everywhere after. In a
checkpoint it is stored as a plain dict (``to_dict``): ``torch.load(weights_only=True)`` loads only plain
types, and checkpoints written before this class existed carry the same keys. ``columns`` came later: a checkpoint
without it reads as a model that takes no table rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from torchport.errors import CheckpointError, DataError
from torchport.tabular import ColumnEncoding

if TYPE_CHECKING:
    from torchport.config import Config
    from torchport.data import DataSplits


# Keys that checkpoints written before them lack; ``from_dict`` reads their absence as the default.
OPTIONAL_META_KEYS = frozenset({"columns", "stats_samples"})


@dataclass(frozen=True)
class ModelSpec:
    """What building a model needs to know of the data: enough to rebuild it from a checkpoint alone."""

    layers: list[Any]
    input_shape: tuple[int, ...]
    input_dtype: str
    num_outputs: int
    input_mean: np.ndarray
    input_std: np.ndarray
    import_paths: list[Path]


@dataclass(frozen=True, eq=False)
class ModelMeta:
    """The data's description that a checkpoint carries beside the weights. (No ``==``: it holds tensors.)"""

    task: str  # "classification" or "regression"
    input_shape: tuple[int, ...]  # one sample, no batch dimension
    input_dtype: str  # "float32" or "int64"
    num_outputs: int
    class_names: tuple[str, ...]  # () for regression
    feature_names: tuple[str, ...]  # tabular columns after one-hot encoding; () for images and arrays
    input_mean: torch.Tensor  # float32, broadcastable to one sample
    input_std: torch.Tensor
    target_mean: torch.Tensor | None  # regression only: de-normalises the predictions
    target_std: torch.Tensor | None
    input_min: float  # range of the training inputs, for drawing random test inputs
    input_max: float
    source: str  # "digits", "csv:/abs/path.csv"
    columns: tuple[ColumnEncoding, ...] = ()  # tables: how raw columns become the features; () for the others
    stats_samples: int = 0  # training samples input_mean/std came from; 0 in checkpoints older than the field

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``meta`` entry: lists, not tuples, exactly as checkpoints have always held it."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["columns"] = [column.to_dict() for column in self.columns]
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}

    @classmethod
    def from_dict(cls, meta: Any, where: str) -> ModelMeta:
        """Read a checkpoint's ``meta``; ``where`` names the checkpoint in the one-line refusal."""
        expected = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {where} has no model description ('meta' is {type(meta).__name__})")
        missing = [key for key in expected if key not in meta and key not in OPTIONAL_META_KEYS]
        unknown = sorted(str(key) for key in meta if key not in expected)
        if missing or unknown:
            faults = [f"lacks {', '.join(missing)}"] if missing else []
            faults += [f"has unknown {', '.join(unknown)}"] if unknown else []
            raise CheckpointError(f"checkpoint {where}: its model description ('meta') {' and '.join(faults)}")
        return cls(
            task=str(meta["task"]),
            input_shape=tuple(int(size) for size in meta["input_shape"]),
            input_dtype=str(meta["input_dtype"]),
            num_outputs=int(meta["num_outputs"]),
            class_names=tuple(meta["class_names"]),
            feature_names=tuple(meta["feature_names"]),
            input_mean=meta["input_mean"],
            input_std=meta["input_std"],
            target_mean=meta["target_mean"],
            target_std=meta["target_std"],
            input_min=float(meta["input_min"]),
            input_max=float(meta["input_max"]),
            source=str(meta["source"]),
            columns=_columns(meta.get("columns", []), where),
            stats_samples=int(meta.get("stats_samples", 0)),
        )


def _columns(stored: Any, where: str) -> tuple[ColumnEncoding, ...]:
    if not isinstance(stored, list):
        raise CheckpointError(f"checkpoint {where}: 'meta.columns' must be a list, not {type(stored).__name__}")
    try:
        return tuple(ColumnEncoding.from_dict(raw, f"meta.columns[{i}]") for i, raw in enumerate(stored))
    except DataError as exc:
        raise CheckpointError(f"checkpoint {where}: {exc}") from None


def model_meta(data: DataSplits) -> ModelMeta:
    """The description of ``data`` that the model's checkpoints carry."""
    return ModelMeta(
        task=data.task,
        input_shape=tuple(data.input_shape),
        input_dtype=data.input_dtype,
        num_outputs=data.num_outputs,
        class_names=tuple(data.class_names),
        feature_names=tuple(data.feature_names),
        input_mean=torch.as_tensor(data.input_mean, dtype=torch.float32),
        input_std=torch.as_tensor(data.input_std, dtype=torch.float32),
        target_mean=None if data.target_mean is None else torch.as_tensor(data.target_mean),
        target_std=None if data.target_std is None else torch.as_tensor(data.target_std),
        input_min=float(data.input_min),
        input_max=float(data.input_max),
        source=data.source,
        columns=tuple(data.columns),
        stats_samples=data.stats_samples,
    )


def model_spec(config: Config, meta: ModelMeta) -> ModelSpec:
    """The config's layers on the data ``meta`` describes: the same spec at training and at export."""
    return ModelSpec(
        layers=config.model.layers,
        input_shape=meta.input_shape,
        input_dtype=meta.input_dtype,
        num_outputs=meta.num_outputs,
        input_mean=meta.input_mean.numpy(),
        input_std=meta.input_std.numpy(),
        import_paths=list(config.import_paths),
    )
