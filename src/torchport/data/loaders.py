"""Splits as torch datasets; the arrays are shared, not copied."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from torchport.data.splits import Split


def tensor_dataset(split: Split) -> TensorDataset:
    """x keeps its dtype (float32, or int64 token ids); y is int64 labels or float32 regression targets."""
    y_dtype = np.int64 if split.y.dtype.kind in "iub" else np.float32
    x = torch.from_numpy(np.ascontiguousarray(split.x))
    y = torch.from_numpy(np.ascontiguousarray(split.y, dtype=y_dtype))
    return TensorDataset(x, y)
