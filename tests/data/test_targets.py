from __future__ import annotations

import numpy as np
import pytest

from torchport.data.targets import encode_targets, infer_task
from torchport.errors import DataError


@pytest.mark.parametrize(
    ("y", "task"),
    [
        (np.array(["b", "a", "b"]), "classification"),
        (np.array([True, False, True]), "classification"),
        (np.array([3, 1, 2]), "classification"),
        (np.array([0.0, 1.0, 1.0, 2.0]), "classification"),  # labels stored as floats
        (np.arange(21, dtype=np.float64), "regression"),  # too many whole numbers to be labels
        (np.array([0.5, 1.0, 2.0]), "regression"),
        (np.ones((4, 2), dtype=np.int64), "regression"),  # several numbers per sample
    ],
)
def test_task_inference(y: np.ndarray, task: str) -> None:
    assert infer_task(y) == task


def test_labels_are_sorted_by_their_own_order() -> None:
    targets = encode_targets(np.array([10, 2, 2, 10, 1]), "auto", "data.target")
    assert targets.class_names == ["1", "2", "10"]
    assert targets.y.tolist() == [2, 1, 1, 2, 0] and targets.y.dtype == np.int64


def test_integral_float_labels_are_named_as_integers() -> None:
    assert encode_targets(np.array([1.0, 0.0, 1.0]), "auto", "k").class_names == ["0", "1"]


def test_mixed_object_labels_fall_back_to_text() -> None:
    targets = encode_targets(np.array([1, "a", 1], dtype=object), "auto", "k")
    assert targets.class_names == ["1", "a"]


def test_explicit_task_overrides_inference() -> None:
    regression = encode_targets(np.array([1, 2, 3]), "regression", "k")
    assert regression.task == "regression" and regression.y.shape == (3, 1) and regression.y.dtype == np.float32
    classification = encode_targets(np.array([0.5, 1.5, 0.5]), "classification", "k")
    assert classification.class_names == ["0.5", "1.5"]


def test_two_dimensional_regression_targets_keep_their_width() -> None:
    targets = encode_targets(np.zeros((5, 3)), "auto", "k")
    assert (targets.task, targets.num_outputs, targets.y.shape) == ("regression", 3, (5, 3))


@pytest.mark.parametrize(
    ("y", "task", "pattern"),
    [
        (
            np.array(["a", "b"]),
            "regression",
            r"^data\.task: regression needs numeric targets, but data\.target",
        ),
        (np.ones((3, 2)), "classification", r"^data\.task: classification needs one label per sample"),
        (np.array([1.0, np.nan, 2.5]), "auto", r"^data\.target: 1 target\(s\) are NaN"),
        (np.array(["x", "x"]), "auto", r"^data\.target: every sample has the label 'x'"),
    ],
)
def test_target_errors_name_the_key(y: np.ndarray, task: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        encode_targets(y, task, "data.target")  # type: ignore[arg-type]
