"""Normalisation statistics, computed on the training split only so validation and test stay unseen.

The model normalises its own input with these (they travel in the manifest), so every runtime in every
language feeds raw values and gets the same answer. Images and signals share statistics across each channel,
since a pixel's position says nothing about its scale; vectors get one statistic per feature.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def stats_shape(sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(F,) for vectors; (C, 1, ...) for anything with more axes, so it broadcasts against one sample."""
    if len(sample_shape) == 1:
        return sample_shape
    return (sample_shape[0],) + (1,) * (len(sample_shape) - 1)


def input_stats(x: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``x`` (N, *sample_shape); identity (zeros, ones) when normalising makes no sense.

    Integer inputs are token ids for an embedding: shifting and scaling them would break the lookup.
    """
    shape = stats_shape(x.shape[1:])
    if not normalize or x.dtype.kind != "f":
        return np.zeros(shape, np.float32), np.ones(shape, np.float32)
    axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64).reshape(shape)
    std = x.std(axis=axes, dtype=np.float64).reshape(shape)
    return mean.astype(np.float32), _nonzero(std)


def streamed_input_stats(
    parts: Iterable[np.ndarray], sample_shape: tuple[int, ...], normalize: bool
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``input_stats`` plus the min and max, over samples that arrive a part at a time (each (n, *sample_shape)):
    sums in float64, so a sample of images never sits in memory whole."""
    shape = stats_shape(sample_shape)
    total = np.zeros(shape[0], np.float64)
    squares = np.zeros(shape[0], np.float64)
    count, low, high, floating = 0, np.inf, -np.inf, True
    for part in parts:
        floating = part.dtype.kind == "f"
        values = part.astype(np.float64).reshape(len(part), shape[0], -1)
        total += values.sum(axis=(0, 2))
        squares += np.square(values).sum(axis=(0, 2))
        count += values.shape[0] * values.shape[2]
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    if not normalize or not floating or count == 0:
        return np.zeros(shape, np.float32), np.ones(shape, np.float32), low, high
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return mean.reshape(shape).astype(np.float32), _nonzero(std.reshape(shape)), low, high


def target_stats(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-target mean and std of regression targets (N, T), each (T,)."""
    mean = y.mean(axis=0, dtype=np.float64)
    std = y.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), _nonzero(std)


def _nonzero(std: np.ndarray) -> np.ndarray:
    """A constant feature carries no information; dividing by 1 keeps it finite instead of NaN."""
    std32 = std.astype(np.float32)  # checked after the cast: a tiny float64 std can round to 0
    return np.where(std32 == 0, np.float32(1), std32)
