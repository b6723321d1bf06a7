"""Accuracy gates: how a variant is judged when parity with PyTorch cannot be the test.

Each variant's validation metric (the training metric, run in ONNX Runtime) is compared with the fp32
``model.onnx``'s. Classification may lose at most ``export.max_accuracy_drop`` accuracy (absolute); regression's
RMSE may rise by at most that fraction (relative). fp32 variants must also match PyTorch within the verify
tolerance; reduced-precision ones cannot, so their parity errors are recorded for information and they are judged
by the accuracy gate (and finite outputs).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from torchport.bundle.manifest import AccuracyGate, ArtifactVerification
from torchport.sessions import onnx_predictor

EVALUATION_CHUNK = 4096


def evaluate_artifact(path: Path, x: np.ndarray, y: np.ndarray, task: str, output_name: str) -> float:
    """The training metric over a split, the artifact run in ONNX Runtime: accuracy, or RMSE in target units."""
    predict = onnx_predictor(path)
    hits, squares, count = 0.0, 0.0, 0
    for start in range(0, len(x), EVALUATION_CHUNK):  # a chunk at a time: x may be read from disk on demand
        output = predict(np.asarray(x[start : start + EVALUATION_CHUNK]))[output_name]
        truth = y[start : start + EVALUATION_CHUNK]
        if task == "classification":
            hits += float((output.argmax(axis=1) == truth).sum())
        else:
            target = truth.reshape(output.shape) if truth.size == output.size else truth
            squares += float(np.sum((output.astype(np.float64) - target) ** 2))
        count += output.size if task != "classification" else len(output)
    if count == 0:
        return math.nan
    if task == "classification":
        return hits / count
    return float(np.sqrt(squares / count))


def accuracy_gate(task: str, value: float, reference: float, max_drop: float) -> AccuracyGate:
    if task == "classification":
        metric, change = "val_accuracy", reference - value
    else:
        metric = "val_rmse"
        change = value / reference - 1.0 if reference > 0 else (0.0 if value == reference else math.inf)
    passed = math.isfinite(value) and change <= max_drop
    if not math.isfinite(change):
        change = 1e308
    return AccuracyGate(
        metric=metric, value=value, reference=reference, change=change, max_drop=max_drop, passed=passed
    )


def describe_gate(gate: AccuracyGate) -> str:
    """e.g. 'val_accuracy 0.912 is 0.050 below fp32 0.962 (max drop 0.01)'."""
    if gate.metric == "val_accuracy":
        direction = "below" if gate.change >= 0 else "above"
        return (
            f"{gate.metric} {gate.value:.4f} is {abs(gate.change):.4f} {direction} fp32 {gate.reference:.4f} "
            f"(max drop {gate.max_drop:g})"
        )
    direction = "above" if gate.change >= 0 else "below"
    return (
        f"{gate.metric} {gate.value:.4g} is {abs(gate.change) * 100:.2f}% {direction} fp32 {gate.reference:.4g} "
        f"(max rise {gate.max_drop * 100:g}%)"
    )


def judged_by_accuracy(result: ArtifactVerification, gate: AccuracyGate | None) -> ArtifactVerification:
    """Reduced precision cannot meet fp32 tolerances: keep the errors as information, pass on finite outputs."""
    for check in result.checks:
        for output in check.outputs.values():
            output.passed = math.isfinite(output.max_abs)
        check.passed = all(o.passed for o in check.outputs.values())
    result.passed = all(c.passed for c in result.checks) and (gate is None or gate.passed)
    result.judged_by = "accuracy"
    return result


def parity_problem(result: ArtifactVerification) -> str:
    """One line on why a variant failed its verification, for the refusal message."""
    worst = max(
        (o.needed_atol for c in result.checks for o in c.outputs.values() if not o.passed),
        default=math.inf,
    )
    if result.judged_by == "accuracy":
        return "non-finite outputs"
    return f"differs from PyTorch: needs atol {worst:.2e} > {result.atol:g} at rtol {result.rtol:g}"
