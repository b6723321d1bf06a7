"""The training split served a whole batch at a time, in the order the batch sampler gives."""

from __future__ import annotations

from pathlib import Path

import torch

from torchport.config import DataConfig, SplitConfig
from torchport.data import load_data
from torchport.data.loaders import TensorBatches, batch_loader

from .builders import write_npz


def test_batches_come_whole_in_the_samplers_order_with_the_splits_dtypes() -> None:
    train = load_data(DataConfig(source="iris"), seed=0).train
    order = [[5, 0, 3], [1], [7, 2]]
    batches = list(batch_loader(train, order, num_workers=0, seed=0))
    assert [len(inputs) for inputs, _ in batches] == [3, 1, 2]
    inputs, targets = batches[0]
    assert (inputs.dtype, targets.dtype, inputs.shape) == (torch.float32, torch.int64, (3, 4))
    assert torch.equal(inputs, torch.as_tensor(train.x[[5, 0, 3]]))
    assert torch.equal(targets, torch.as_tensor(train.y[[5, 0, 3]]))


def test_token_ids_stay_integers_and_regression_targets_floats(tmp_path: Path) -> None:
    tokens = load_data(write_npz(tmp_path), seed=0)
    dataset = TensorBatches(torch.as_tensor(tokens.train.x), torch.as_tensor(tokens.train.y))
    x, y = dataset.__getitems__([0, 1])
    assert (x.dtype, y.dtype, y.shape) == (torch.int64, torch.float32, (2, 2))
    assert torch.equal(dataset[1][0], x[1])


def test_one_channel_image_batches_have_plain_strides_not_channels_last() -> None:
    """A size-1 channel axis with the smallest stride makes torch pick channels_last convolutions (10-15 % slower
    on the digits CNN): every split, and every batch made from it, has a fresh C-ordered array's strides."""
    data = load_data(DataConfig(split=SplitConfig(val=0.2, test=0.1)), seed=0)
    for split in (data.train, data.val, data.test):
        assert torch.as_tensor(split.x).stride() == torch.empty(split.x.shape).stride()
    loader = batch_loader(data.train, [list(range(5)), [7, 3]], num_workers=0, seed=0)
    for inputs, _ in loader:
        assert inputs.stride() == torch.empty(inputs.shape).stride()  # (N, 64, 8, 1), not channels_last's (N, 1, 8, 1)
