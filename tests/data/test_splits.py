from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from torchport.config import DataConfig, SplitConfig
from torchport.data import DataSplits, load_data
from torchport.data.splits import split_indices
from torchport.errors import DataError

from .builders import updated, write_images, write_npz


def ids_config(tmp_path: Path, labels: np.ndarray, **changes: object) -> DataConfig:
    """Feature 0 is each sample's index, so a split's samples can be identified; feature 1 varies."""
    n = len(labels)
    x = np.stack([np.arange(n, dtype=np.float64), np.sin(np.arange(n))], axis=1)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    cfg = DataConfig(source="npy", path=tmp_path / "x.npy", targets=tmp_path / "y.npy")
    return updated(cfg, **changes)


def ids(data: DataSplits) -> list[list[int]]:
    """Train, val and test sample ids, in split order."""
    return [split.x[:, 0].astype(int).tolist() for split in (data.train, data.val, data.test)]


def test_splits_are_disjoint_complete_and_sized_from_the_whole(tmp_path: Path) -> None:
    cfg = ids_config(tmp_path, np.arange(100) % 4, split={"val": 0.2, "test": 0.1})
    train, val, test = ids(load_data(cfg, seed=0))
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert sorted(train + val + test) == list(range(100))


def test_same_seed_same_splits_other_seed_other_splits(tmp_path: Path) -> None:
    cfg = ids_config(tmp_path, np.arange(60) % 3, split={"val": 0.2, "test": 0.2})
    first, again, other = (ids(load_data(cfg, seed=s)) for s in (7, 7, 8))
    assert first == again
    assert first != other


def test_changing_val_never_moves_test_samples(tmp_path: Path) -> None:
    labels = np.arange(60) % 3
    small = ids(load_data(ids_config(tmp_path, labels, split={"val": 0.1, "test": 0.2}), seed=3))
    large = ids(load_data(ids_config(tmp_path, labels, split={"val": 0.3, "test": 0.2}), seed=3))
    assert small[2] == large[2]


def test_classification_splits_are_stratified(tmp_path: Path) -> None:
    labels = np.array([0] * 80 + [1] * 20)  # 4:1
    data = load_data(ids_config(tmp_path, labels, split={"val": 0.2, "test": 0.1}), seed=1)
    assert np.bincount(data.val.y).tolist() == [16, 4]
    assert np.bincount(data.test.y).tolist() == [8, 2]


def test_stratify_false_is_respected(tmp_path: Path) -> None:
    labels = np.array([0] * 80 + [1] * 20)
    counts = set()
    for seed in range(10):
        data = load_data(ids_config(tmp_path, labels, split={"val": 0.2, "stratify": False}), seed=seed)
        counts.add(int(np.bincount(data.val.y, minlength=2)[1]))
    assert counts != {4}


def test_a_class_with_one_member_falls_back_to_unstratified(tmp_path: Path) -> None:
    labels = np.array([0] * 10 + [1] * 9 + [2])
    train, val, test = ids(load_data(ids_config(tmp_path, labels, split={"val": 0.2, "test": 0.2}), seed=0))
    assert sorted(train + val + test) == list(range(20))


def test_empty_test_split_keeps_trailing_shape(tmp_path: Path) -> None:
    images = load_data(write_images(tmp_path), seed=0)
    assert images.test.x.shape == (0, 3, 6, 5) and images.test.y.shape == (0,)
    assert images.test.y.dtype == np.int64
    regression = load_data(write_npz(tmp_path), seed=0)
    assert regression.test.x.shape == (0, 5) and regression.test.y.shape == (0, 2)
    assert regression.test.y.dtype == np.float32


@pytest.mark.parametrize(("val", "test", "n"), [(0.5, 0.5, 10), (0.2, 0.0, 1), (0.6, 0.4, 30)])
def test_too_few_samples_names_the_split_key(val: float, test: float, n: int) -> None:
    with pytest.raises(DataError, match=r"^data\.split: .* too few .* leaves 0 for training"):
        split_indices(n, None, SplitConfig(val=val, test=test), seed=0)


def test_tiny_but_possible_split(tmp_path: Path) -> None:
    data = load_data(ids_config(tmp_path, np.array([0, 1, 0]), split={"val": 0.3, "test": 0.3}), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (1, 1, 1)


# --- statistics come from the train split only -------------------------------------------------------------


def test_image_statistics_are_per_channel_on_train(tmp_path: Path) -> None:
    data = load_data(write_images(tmp_path, per_class=6), seed=0)
    x = data.train.x.astype(np.float64)
    assert data.input_mean.shape == data.input_std.shape == (3, 1, 1)
    np.testing.assert_allclose(data.input_mean[:, 0, 0], x.mean(axis=(0, 2, 3)), rtol=1e-6)
    std = x.std(axis=(0, 2, 3))
    np.testing.assert_allclose(data.input_std[:, 0, 0], np.where(std == 0, 1, std), rtol=1e-6)
    assert data.input_std[2, 0, 0] == 1.0  # the blue channel is constant
    assert (data.input_min, data.input_max) == (float(x.min()), float(x.max()))


def test_tabular_statistics_are_per_feature_on_train(tmp_path: Path) -> None:
    data = load_data(DataConfig(source="iris", split={"val": 0.3, "test": 0.2}), seed=0)
    x = data.train.x.astype(np.float64)
    np.testing.assert_allclose(data.input_mean, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(data.input_std, x.std(axis=0), rtol=1e-6)
    everything = np.concatenate([data.train.x, data.val.x, data.test.x]).astype(np.float64)
    assert not np.allclose(data.input_mean, everything.mean(axis=0), rtol=1e-6)


def test_two_dimensional_samples_get_per_channel_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", x=rng.normal(size=(30, 2, 7)) * [[1.0], [5.0]], y=np.arange(30) % 2)
    data = load_data(DataConfig(source="npz", path=tmp_path / "s.npz"), seed=0)
    assert data.input_mean.shape == (2, 1)
    np.testing.assert_allclose(data.input_std[:, 0], data.train.x.astype(np.float64).std(axis=(0, 2)), rtol=1e-5)


def test_normalize_false_gives_identity_statistics(tmp_path: Path) -> None:
    data = load_data(DataConfig(source="digits", normalize=False), seed=0)
    np.testing.assert_array_equal(data.input_mean, np.zeros((1, 1, 1), np.float32))
    np.testing.assert_array_equal(data.input_std, np.ones((1, 1, 1), np.float32))


def test_inputs_and_targets_stay_raw(tmp_path: Path) -> None:
    data = load_data(write_npz(tmp_path), seed=0)
    raw = np.load(tmp_path / "data.npz")
    assert any(np.array_equal(data.train.x[0], row) for row in raw["x"])
    assert any(np.allclose(data.train.y[0], row) for row in raw["y"])


def test_regression_target_statistics_come_from_train(tmp_path: Path) -> None:
    data = load_data(updated(write_npz(tmp_path), split={"val": 0.25, "test": 0.25}), seed=0)
    assert data.target_mean is not None and data.target_std is not None
    y = data.train.y.astype(np.float64)
    assert data.target_mean.shape == data.target_std.shape == (2,)
    np.testing.assert_allclose(data.target_mean, y.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(data.target_std, y.std(axis=0), rtol=1e-5)
