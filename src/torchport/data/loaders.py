"""The training split as batches for a ``DataLoader``, served a whole batch at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from torchport.data.augment import Augment
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


class AugmentedBatches(TensorBatches):
    """Training batches with ``data.augment`` applied; indices arrive as (epoch, index) pairs (``EpochTagged``),
    so a worker process augments exactly as the main process would, whatever epoch its copy was made in."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, augment: Augment) -> None:
        super().__init__(inputs, targets)
        self.augment = augment

    def __getitems__(self, indices: list[Any]) -> Batch:
        epoch = int(indices[0][0]) if indices else 0
        plain = [int(index) for _, index in indices]
        inputs, targets = super().__getitems__(plain)
        return self.augment.batch(inputs, epoch, plain), targets


class EpochTagged:
    """A batch sampler whose batches carry the epoch: ``[(epoch, index), ...]``. The epoch is read from the
    wrapped sampler's ``epoch`` when an epoch's iteration starts (after the loop's ``set_epoch``)."""

    def __init__(self, batches: Iterable[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = int(getattr(self.batches, "epoch", 0))
        for batch in self.batches:
            yield [(epoch, int(index)) for index in batch]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


def whole_batch(batch: Any) -> Any:
    """``TensorBatches`` already returns the batch as two tensors: nothing left to collate. (A module-level
    function, not a lambda: worker processes receive it pickled.)"""
    return batch


def batch_loader(
    split: Split, batches: Iterable[list[int]], num_workers: int, seed: int, augment: Augment | None = None
) -> DataLoader[Batch]:
    """``split`` in the order of ``batches`` (a batch sampler: each item is one batch's sample indices).
    ``augment`` (training only) transforms each sample, seeded by (seed, epoch, index); see data/augment.py."""
    inputs, targets = torch.as_tensor(split.x), torch.as_tensor(split.y)
    dataset = TensorBatches(inputs, targets) if augment is None else AugmentedBatches(inputs, targets, augment)
    return DataLoader(
        dataset,
        batch_sampler=batches if augment is None else EpochTagged(batches),
        collate_fn=whole_batch,
        num_workers=num_workers,
        # Its own generator: a DataLoader otherwise draws a seed from the global RNG at every epoch start,
        # which would shift the dropout stream of a run resumed mid-epoch.
        generator=torch.Generator().manual_seed(seed),
    )
