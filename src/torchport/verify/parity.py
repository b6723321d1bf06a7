"""Compare a candidate runtime's outputs with the reference's, and say by how much they differ.

For each output: the max absolute error, the max relative error, the smallest atol that would pass at the
configured rtol, and (for classifiers) how often the argmax agrees. ``passed`` is ``np.allclose`` semantics:
``|candidate - reference| <= atol + rtol * |reference|`` everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from torchport.bundle.manifest import ArtifactVerification, OutputParity, ParityCheck
from torchport.sessions import Predictor

TINY = 1e-12


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-3


@dataclass(frozen=True)
class InputSet:
    label: str
    inputs: np.ndarray


def compare(candidate: np.ndarray, reference: np.ndarray, tol: Tolerance, argmax: bool) -> OutputParity:
    if candidate.shape != reference.shape:
        return OutputParity(max_abs=float("inf"), max_rel=float("inf"), needed_atol=float("inf"), passed=False)
    candidate64, reference64 = candidate.astype(np.float64), reference.astype(np.float64)
    error = np.abs(candidate64 - reference64)
    magnitude = np.abs(reference64)
    finite = bool(np.isfinite(error).all())
    max_abs = float(error.max()) if error.size and finite else (0.0 if not error.size else float("inf"))
    max_rel = float((error / np.maximum(magnitude, TINY)).max()) if error.size and finite else max_abs
    needed = float(np.maximum(error - tol.rtol * magnitude, 0.0).max()) if error.size and finite else max_abs
    agreement = None
    if argmax and candidate.ndim == 2 and len(candidate):
        agreement = float((candidate.argmax(axis=1) == reference.argmax(axis=1)).mean())
    return OutputParity(
        max_abs=max_abs,
        max_rel=max_rel,
        needed_atol=needed,
        argmax_agreement=agreement,
        passed=finite and needed <= tol.atol,
    )


def check(
    input_set: InputSet, candidate: Predictor, reference: Predictor, tol: Tolerance, argmax_outputs: set[str]
) -> ParityCheck:
    got = candidate(input_set.inputs)
    want = reference(input_set.inputs)
    outputs = {
        name: compare(got[name], want[name], tol, name in argmax_outputs) if name in got else _missing()
        for name in want
    }
    return ParityCheck(
        inputs=input_set.label,
        batch=len(input_set.inputs),
        outputs=outputs,
        passed=all(o.passed for o in outputs.values()),
    )


def _missing() -> OutputParity:
    return OutputParity(max_abs=float("inf"), max_rel=float("inf"), needed_atol=float("inf"), passed=False)


def verify_artifact(
    artifact: str,
    runtime: str,
    candidate: Predictor,
    reference: Predictor,
    reference_kind: str,
    input_sets: list[InputSet],
    tol: Tolerance,
    argmax_outputs: set[str],
) -> ArtifactVerification:
    started = time.perf_counter()
    checks = [check(input_set, candidate, reference, tol, argmax_outputs) for input_set in input_sets]
    return ArtifactVerification(
        artifact=artifact,
        runtime=runtime,
        reference=reference_kind,
        atol=tol.atol,
        rtol=tol.rtol,
        passed=all(c.passed for c in checks),
        checks=checks,
        seconds=round(time.perf_counter() - started, 3),
    )


def random_inputs(shape: tuple[int, ...], dtype: str, low: float, high: float, batch: int, seed: int) -> np.ndarray:
    """Inputs drawn over the training range: they exercise every batch size, not only the data's."""
    rng = np.random.default_rng(seed)
    if dtype == "int64":
        return rng.integers(int(low), int(high) + 1, size=(batch, *shape), dtype=np.int64)
    return rng.uniform(low, high, size=(batch, *shape)).astype(np.float32)
