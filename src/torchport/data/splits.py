"""Train / validation / test splits and the one entry point, ``load_data``, that the ``data:`` section drives.

Splits are a pure function of the data, the config and the seed, so a resumed or repeated run trains and
validates on exactly the same samples. Test is carved first, so changing ``split.val`` never moves a test
sample into training. Normalisation is not applied here: the model applies it inside itself, so what is
exported takes raw inputs, and training feeds raw values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from torchport.config import DataConfig, SplitConfig
from torchport.data.rows import Array, Rows, take
from torchport.data.sources import RawData, read_source
from torchport.data.split_draws import class_sizes, shuffled_split, stratified_split
from torchport.data.stats import input_stats, streamed_input_stats, target_stats
from torchport.data.targets import Targets, encode_targets
from torchport.errors import DataError
from torchport.tabular import ColumnEncoding


@dataclass
class Split:
    x: Array  # (N, *input_shape) float32, or int64 for integer features (token ids); Rows when read on demand
    y: np.ndarray  # classification: int64 (N,) in 0..K-1; regression: float32 (N, T)

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class DataSplits:
    train: Split
    val: Split
    test: Split  # may hold 0 samples
    task: Literal["classification", "regression"]
    class_names: list[str]  # sorted original labels as strings; [] for regression
    feature_names: list[str]  # tabular columns after one-hot encoding ("color=red"); [] for images and arrays
    input_shape: tuple[int, ...]  # one sample, no batch dimension
    input_dtype: str  # "float32" or "int64"
    num_outputs: int  # classes, or regression targets T
    input_mean: np.ndarray  # float32: (C, 1, 1) for images, (C, 1) for 2-D samples, (F,) for vectors
    input_std: np.ndarray  # train split only; zero std replaced by 1
    target_mean: np.ndarray | None  # regression: float32 (T,) from the train split; None for classification
    target_std: np.ndarray | None
    input_min: float  # range of the train inputs, for drawing random test inputs
    input_max: float
    source: str  # "digits", "csv:/abs/path.csv"
    columns: tuple[ColumnEncoding, ...] = ()  # tables: how raw columns become the features; () for the others
    skipped: tuple[str, ...] = ()  # image files skipped as undecodable (data.skip_corrupt); len() is the count
    stats_samples: int = 0  # how many training samples the input statistics came from (all, unless read lazily)


def load_data(cfg: DataConfig, seed: int) -> DataSplits:
    raw = read_source(cfg)
    _check_samples(raw)
    targets = encode_targets(raw.y, cfg.task, raw.y_key)
    labels = targets.y if targets.task == "classification" and cfg.split.stratify else None
    train, val, test = split_indices(len(raw.x), labels, cfg.split, seed)
    return _assemble(raw, targets, cfg, (train, val, test), seed)


def split_indices(
    n: int, labels: np.ndarray | None, split: SplitConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, val and test sample indices; stratified by ``labels`` wherever every class can be."""
    n_test = _count(split.test, n)
    n_val = _count(split.val, n)
    if n - n_test - n_val < 1:
        raise DataError(
            f"data.split: {n} samples are too few for val={split.val} and test={split.test} "
            f"({n_val} val + {n_test} test leaves {n - n_test - n_val} for training); "
            "lower the fractions or add data"
        )
    rest, test = _carve(np.arange(n), n_test, labels, seed)
    train, val = _carve(rest, n_val, labels, seed)
    return train, val, test


def _count(fraction: float, n: int) -> int:
    # Rounded up like scikit-learn, so any non-zero fraction holds at least one sample.
    return math.ceil(round(fraction * n, 9)) if fraction > 0 else 0


def _carve(indices: np.ndarray, n_take: int, labels: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, taken) with ``n_take`` taken: scikit-learn's draws (``split_draws.py``)."""
    if n_take == 0:
        return indices, indices[:0]
    kept, taken = _draw(indices, n_take, labels[indices] if labels is not None else None, seed % 2**32)
    return indices[kept].astype(np.int64, copy=False), indices[taken].astype(np.int64, copy=False)


def _draw(indices: np.ndarray, n_take: int, labels: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``indices`` (kept, taken): stratified by ``labels`` where every class can be."""
    if labels is not None:
        sizes = class_sizes(labels)
        if _can_stratify(sizes, len(labels), n_take):
            return stratified_split(labels, sizes, n_take, seed)
    return shuffled_split(len(indices), n_take, seed)


def _can_stratify(sizes: np.ndarray, n: int, n_take: int) -> bool:
    """Stratifying needs two of every class, and room for every class on both sides of the split."""
    classes = len(sizes)
    return bool(sizes.min() >= 2) and n_take >= classes and n - n_take >= classes


def _check_samples(raw: RawData) -> None:
    if len(raw.x) == 0:
        raise DataError(f"{raw.x_key}: no samples in {raw.source}")
    if len(raw.y) != len(raw.x):
        raise DataError(
            f"{raw.y_key}: {len(raw.y)} targets for {len(raw.x)} samples ({raw.x_key}); "
            "features and targets must have the same length"
        )
    if raw.x.dtype.kind == "f" and not isinstance(raw.x, Rows):  # lazy sources check as they read
        bad = ~np.isfinite(raw.x.reshape(len(raw.x), -1)).all(axis=1)
        if bad.any():
            raise DataError(
                f"{raw.x_key}: {int(bad.sum())} sample(s) hold NaN or infinite feature values "
                f"(first at sample {int(np.argmax(bad))}) in {raw.source}"
            )


def _assemble(
    raw: RawData, targets: Targets, cfg: DataConfig, indices: tuple[np.ndarray, np.ndarray, np.ndarray], seed: int
) -> DataSplits:
    train, val, test = (Split(take(raw.x, idx), targets.y[idx]) for idx in indices)
    input_mean, input_std, input_min, input_max, stats_samples = _input_stats(train.x, cfg, seed)
    target_mean, target_std = target_stats(train.y) if targets.task == "regression" else (None, None)
    return DataSplits(
        train=train,
        val=val,
        test=test,
        task=targets.task,
        class_names=targets.class_names,
        feature_names=raw.feature_names,
        input_shape=tuple(int(d) for d in raw.x.shape[1:]),
        input_dtype=str(raw.x.dtype),
        num_outputs=targets.num_outputs,
        input_mean=input_mean,
        input_std=input_std,
        target_mean=target_mean,
        target_std=target_std,
        input_min=input_min,
        input_max=input_max,
        source=raw.source,
        columns=raw.columns,
        skipped=raw.skipped,
        stats_samples=stats_samples,
    )


def _input_stats(x: Array, cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray, float, float, int]:
    """Mean, std, min, max and how many training samples they came from: all of an in-memory split (exact, and
    cheap); a seeded random ``data.stats_samples`` of one read on demand, read a part at a time (reading all of
    a split larger than memory just for a mean would cost a whole epoch)."""
    if not isinstance(x, Rows):
        mean, std = input_stats(x, cfg.normalize)
        return mean, std, float(x.min()), float(x.max()), len(x)
    count = min(len(x), cfg.stats_samples)
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), size=count, replace=False))
    parts = (x[chosen[start : start + 1024]] for start in range(0, count, 1024))
    mean, std, low, high = streamed_input_stats(parts, tuple(x.shape[1:]), cfg.normalize)
    return mean, std, low, high, count
