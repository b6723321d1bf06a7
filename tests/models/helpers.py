"""Building a model from a few layers without any data: what compose needs to know of the data, made up."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from torchport.models.spec import ModelSpec

CLASSES = 3


def model_spec(
    layers: list[Any],
    in_shape: tuple[int, ...],
    input_dtype: str = "float32",
    *,
    num_outputs: int = CLASSES,
    import_paths: Sequence[Path] = (),
) -> ModelSpec:
    """A spec with identity normalisation (mean 0, std 1) so a block sees exactly the tensor a test feeds."""
    return ModelSpec(
        layers=layers,
        input_shape=in_shape,
        input_dtype=input_dtype,
        num_outputs=num_outputs,
        input_mean=np.zeros(in_shape, dtype=np.float32),
        input_std=np.ones(in_shape, dtype=np.float32),
        import_paths=list(import_paths),
    )
