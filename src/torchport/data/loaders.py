"""The training split as batches for a ``DataLoader``, served a whole batch at a time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader

from torchport.data.splits import Split

Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, *input_shape), targets (B,) or (B, T)


class TensorBatches(torch.utils.data.Dataset[Batch]):
    """In-memory tensors served a whole batch at a time: one indexing per batch instead of a Python call and
    a stack per sample, which on small models costs as much as the forward pass."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> Batch:
        return self.inputs[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.as_tensor(indices)
        return self.inputs[index], self.targets[index]


def whole_batch(batch: Any) -> Any:
    """``TensorBatches`` already returns the batch as two tensors: nothing left to collate. (A module-level
    function, not a lambda: worker processes receive it pickled.)"""
    return batch


def batch_loader(split: Split, batches: Iterable[list[int]], num_workers: int, seed: int) -> DataLoader[Batch]:
    """``split`` in the order of ``batches`` (a batch sampler: each item is one batch's sample indices)."""
    return DataLoader(
        TensorBatches(torch.as_tensor(split.x), torch.as_tensor(split.y)),
        batch_sampler=batches,
        collate_fn=whole_batch,
        num_workers=num_workers,
        # Its own generator: a DataLoader otherwise draws a seed from the global RNG at every epoch start,
        # which would shift the dropout stream of a run resumed mid-epoch.
        generator=torch.Generator().manual_seed(seed),
    )
