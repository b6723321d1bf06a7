"""Deciding the task from the targets, and turning user labels into what a loss function takes.

A user rarely says whether their data is classification or regression, and they should not have to: strings,
booleans and integers are labels; floats are measurements, unless they are a handful of whole numbers (a CSV
that stored 0/1 labels as 0.0/1.0). Labels become 0..K-1 in the sorted order of the originals, so the same
data always yields the same label ids, whatever order the rows come in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from torchport.errors import DataError

Task = Literal["classification", "regression"]

# Floats holding at most this many distinct whole numbers are taken to be labels stored as floats.
MAX_INTEGRAL_FLOAT_CLASSES = 20


@dataclass
class Targets:
    y: np.ndarray  # classification: int64 (N,) in 0..K-1; regression: float32 (N, T)
    task: Task
    class_names: list[str]
    num_outputs: int


def encode_targets(y: np.ndarray, task: Literal["auto", "classification", "regression"], key: str) -> Targets:
    """``key`` is the config key that named the targets, so every error points at what the user wrote."""
    chosen: Task = infer_task(y) if task == "auto" else task
    if chosen == "classification":
        return _classification(y, key)
    return _regression(y, key)


def infer_task(y: np.ndarray) -> Task:
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "biuf":
        return "regression"  # several numbers per sample are measurements, not one label
    kind = y.dtype.kind
    if kind != "f":
        return "classification"
    finite = y[np.isfinite(y)]
    integral = bool(np.all(finite == np.round(finite)))
    few = len(np.unique(finite)) <= MAX_INTEGRAL_FLOAT_CLASSES
    return "classification" if integral and few else "regression"


def encode_labels(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sorted unique labels as strings, and each value's int64 index into them.

    Labels are sorted by their own order (2 before 10), and only by text when they cannot be compared
    (a column mixing numbers and strings).
    """
    values = np.asarray(values).reshape(-1)
    try:
        classes, codes = np.unique(values, return_inverse=True)
    except TypeError:
        classes, codes = np.unique(values.astype(str), return_inverse=True)
    return [str(label) for label in classes], codes.reshape(-1).astype(np.int64)


def _classification(y: np.ndarray, key: str) -> Targets:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"data.task: classification needs one label per sample, but {key} has shape {y.shape}; "
            "use task: regression for several target values per sample"
        )
    if y.dtype.kind == "f":
        _check_finite(y, key)
        if np.all(y == np.round(y)):
            y = y.astype(np.int64)  # label "1", not "1.0"
    class_names, codes = encode_labels(y)
    if len(class_names) < 2:
        raise DataError(
            f"{key}: every sample has the label {class_names[0]!r}; classification needs at least 2 classes"
        )
    return Targets(y=codes, task="classification", class_names=class_names, num_outputs=len(class_names))


def _regression(y: np.ndarray, key: str) -> Targets:
    if y.dtype.kind not in "biuf":
        example = y.reshape(-1)[0]
        raise DataError(
            f"data.task: regression needs numeric targets, but {key} holds values such as {example!r}; "
            "use task: classification or auto"
        )
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise DataError(f"{key}: regression targets must be (N,) or (N, T), got shape {y.shape}")
    values = y.astype(np.float32)
    _check_finite(values, key)
    return Targets(y=values, task="regression", class_names=[], num_outputs=values.shape[1])


def _check_finite(y: np.ndarray, key: str) -> None:
    bad = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{key}: {int(bad.sum())} target(s) are NaN or infinite (first at sample {first}); fix or remove them"
        )
