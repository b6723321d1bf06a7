"""The batch order is part of every run's identity: a resumed run, or one made by an older torchport, must see
the very same batches. These pin it to the order as first defined, on a list of Python ints."""

from __future__ import annotations

import pytest
import torch

from torchport.train.sampling import EpochBatchSampler


def _first_defined(n: int, batch: int, seed: int, epoch: int, shuffle: bool, rank: int, world: int) -> list[list[int]]:
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    else:
        order = list(range(n))
    per_rank = -(-n // world)
    mine = (order + order[: per_rank * world - len(order)])[rank::world]
    return [mine[start : start + batch] for start in range(0, len(mine), batch)]


@pytest.mark.parametrize(
    ("n", "batch", "world", "shuffle"),
    [(1000, 32, 1, True), (1001, 64, 3, True), (10, 4, 4, False), (3, 2, 4, True), (5000, 5000, 2, True)],
)
def test_batches_are_the_order_first_defined(n: int, batch: int, world: int, shuffle: bool) -> None:
    for rank in range(world):
        for epoch in (0, 7):
            sampler = EpochBatchSampler(n, batch, seed=11, shuffle=shuffle, rank=rank, world_size=world)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert batches == _first_defined(n, batch, 11, epoch, shuffle, rank, world)
            assert all(type(index) is int for index in batches[0])
            sampler.set_epoch(epoch, skip=1)
            assert list(sampler) == batches[1:]
