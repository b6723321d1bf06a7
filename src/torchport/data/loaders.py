"""The training split as batches for a ``DataLoader``, served a whole batch at a time.

In-memory samples are one tensor indexed once per batch. Samples read on demand (``Rows``: image files, rows of
a ``.npy`` file) are read by the DataLoader's workers, a batch per call, in the order the batch sampler (in the
main process) chose: workers only decode, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from torchport.data.augment import Augment
from torchport.data.rows import Rows
from torchport.data.splits import Split
from torchport.errors import DataError

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


class RowBatches(TensorBatches):
    """Batches of samples read on demand: only the batch's own samples are read, in the worker that serves it."""

    def __init__(self, rows: Rows, targets: torch.Tensor) -> None:
        super().__init__(torch.empty(0), targets)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> Batch:
        index = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(self.rows[index])), self.targets[torch.from_numpy(index)]


class AugmentedBatches(TensorBatches):
    """Training batches with ``data.augment`` applied; indices arrive as (epoch, index) pairs (``EpochTagged``),
    so a worker process augments exactly as the main process would, whatever epoch its copy was made in."""

    def __init__(self, plain: TensorBatches, augment: Augment) -> None:
        super().__init__(plain.inputs, plain.targets)
        self.plain, self.augment = plain, augment

    def __len__(self) -> int:
        return len(self.plain)

    def __getitems__(self, indices: list[Any]) -> Batch:
        epoch = int(indices[0][0]) if indices else 0
        plain = [int(index) for _, index in indices]
        inputs, targets = self.plain.__getitems__(plain)
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


class NamedErrorsLoader(DataLoader[Batch]):
    """A DataLoader whose workers' data errors arrive as the worker's own one line: torch re-raises an exception
    from a worker with its whole traceback folded into the message, which the CLI would print as is."""

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        iterator = super().__iter__()
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except DataError as exc:
                raise DataError(worker_line(str(exc))) from None
            yield batch


def worker_line(message: str) -> str:
    """The original message of an error re-raised from a worker ("...\ntorchport.errors.DataError: <line>")."""
    last = message.strip().splitlines()[-1] if message.strip() else message
    _, found, line = last.partition("DataError: ")
    return line if found else last


def batch_loader(
    split: Split,
    batches: Iterable[list[int]],
    num_workers: int,
    seed: int,
    augment: Augment | None = None,
    pin_memory: bool = False,
) -> DataLoader[Batch]:
    """``split`` in the order of ``batches`` (a batch sampler: each item is one batch's sample indices).
    ``augment`` (training only) transforms each sample, seeded by (seed, epoch, index); see data/augment.py.
    Workers persist across epochs (starting them costs more than an epoch of a small set); ``pin_memory`` on
    GPU lets the copy to the device overlap the step."""
    targets = torch.as_tensor(split.y)
    if isinstance(split.x, Rows):
        dataset: TensorBatches = RowBatches(split.x, targets)
    else:
        dataset = TensorBatches(torch.as_tensor(split.x), targets)
    if augment is not None:
        dataset = AugmentedBatches(dataset, augment)
    return NamedErrorsLoader(
        dataset,
        batch_sampler=batches if augment is None else EpochTagged(batches),
        collate_fn=whole_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        # Its own generator: a DataLoader otherwise draws a seed from the global RNG at every epoch start,
        # which would shift the dropout stream of a run resumed mid-epoch.
        generator=torch.Generator().manual_seed(seed),
    )
