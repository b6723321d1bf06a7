"""Optimised variants of ``model.onnx``, each kept only when it stays accurate.

Four variants, all made by ONNX Runtime's own tools (no quantizer or converter of ours):

- ``optimized``: ``model.optimized.onnx``, the graph after ONNX Runtime's extended (CPU, portable across x86/ARM)
  optimisations, saved offline so a session need not redo them;
- ``int8``: ``model.int8.onnx``, static QDQ quantization calibrated on training samples after
  ``quant_pre_process``, or dynamic quantization for graphs without convolutions (linear/recurrent models);
- ``fp16``: ``model.fp16.onnx``, half-precision weights with float32 inputs and outputs kept for callers;
- ``ort``: ``model.ort``, the ORT format for ONNX Runtime Mobile.

The gate: each variant's validation metric (the training metric, run in ONNX Runtime) is compared with the fp32
``model.onnx``'s. Classification may lose at most ``export.max_accuracy_drop`` accuracy (absolute); regression's RMSE
may rise by at most that fraction (relative). fp32 variants must also match PyTorch within the verify tolerance;
reduced-precision ones cannot, so their parity errors are recorded for information and they are judged by the
accuracy gate (and finite outputs). A variant that fails is deleted and named in one line; it never enters the
manifest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchport.bundle.manifest import (
    AccuracyGate,
    Artifact,
    ArtifactVerification,
    Bundle,
    Variant,
    VariantOutcome,
    file_entry,
)
from torchport.config import ExportConfig
from torchport.data import DataSplits
from torchport.errors import first_line
from torchport.export.measure import BATCHES, THREADS, measure_latency
from torchport.verify.parity import random_inputs
from torchport.verify.runners import onnx_runner

VARIANT_FILES: dict[str, str] = {
    "optimized": "model.optimized.onnx",
    "int8": "model.int8.onnx",
    "fp16": "model.fp16.onnx",
    "ort": "model.ort",
}
CALIBRATION_BATCH = 32
RECURRENT_OPS = {"LSTM", "GRU", "RNN", "Scan", "Loop"}
ParityCheck = Callable[[Artifact], ArtifactVerification]


@dataclass(frozen=True)
class Built:
    kind: str
    precision: str
    recipe: dict[str, str | int | float | bool]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ONNX Runtime's tools print progress to stdout and log at INFO; the stage prints its own summary."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# --- building ------------------------------------------------------------------------------------------------


def build_optimized(source: Path, target: Path) -> Built:
    """Offline graph optimisation at the extended level: fusions that stay valid on any CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    return Built("onnx", "fp32", {"tool": "onnxruntime", "level": "extended"})


def op_types(path: Path) -> set[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    types = {node.op_type for node in model.graph.node}
    for function in model.functions:
        types |= {node.op_type for node in function.node}
    return types


def int8_mode(source: Path, setting: str) -> str:
    """auto: static QDQ for convolutional graphs; dynamic for linear/recurrent ones (weights dominate there)."""
    if setting != "auto":
        return setting
    ops = op_types(source)
    return "static" if ("Conv" in ops and not ops & RECURRENT_OPS) else "dynamic"


def build_int8(source: Path, target: Path, settings: ExportConfig, calibration: np.ndarray, input_name: str) -> Built:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    mode = int8_mode(source, settings.int8_mode)
    recipe: dict[str, str | int | float | bool] = {"tool": "onnxruntime.quantization", "mode": mode}
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared))
            recipe["pre_process"] = True
        except Exception:  # symbolic shape inference does not know every op; quantize the graph as exported
            shutil.copyfile(source, prepared)
            recipe["pre_process"] = False
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(target), per_channel=settings.per_channel)
            recipe["per_channel"] = settings.per_channel
            return Built("onnx", "int8", recipe)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(
                    [
                        {input_name: calibration[start : start + CALIBRATION_BATCH]}
                        for start in range(0, len(calibration), CALIBRATION_BATCH)
                    ]
                )

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        methods = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            calibrate_method=methods[settings.calibration_method],
            activation_type=QuantType.QUInt8 if settings.int8_activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    recipe.update(
        {
            "format": "QDQ",
            "calibration": settings.calibration_method,
            "calibration_samples": len(calibration),
            "per_channel": settings.per_channel,
            "activations": settings.int8_activations,
            "weights": "int8",
        }
    )
    return Built("onnx", "int8", recipe)


def build_fp16(source: Path, target: Path) -> Built:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return Built("onnx", "fp16", {"tool": "onnxruntime.transformers.float16", "keep_io_types": True})


def build_ort(source: Path, target: Path) -> Built:
    """The ORT format for ONNX Runtime Mobile, with the converter's portable (no NCHWc) optimisations."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model.onnx"
        shutil.copyfile(source, model)
        convert_onnx_models_to_ort(
            model, output_dir=Path(scratch) / "out", optimization_styles=[OptimizationStyle.Fixed]
        )
        produced = Path(scratch) / "out" / "model.ort"
        if not produced.is_file():
            raise RuntimeError("the ORT converter wrote no model.ort")
        shutil.move(produced, target)
    return Built("ort", "fp32", {"tool": "onnxruntime.tools.convert_onnx_models_to_ort", "style": "fixed"})


def build_variant(
    variant: str, source: Path, target: Path, settings: ExportConfig, calibration: np.ndarray, input_name: str
) -> Built:
    with quiet():
        if variant == "optimized":
            return build_optimized(source, target)
        if variant == "int8":
            return build_int8(source, target, settings, calibration, input_name)
        if variant == "fp16":
            return build_fp16(source, target)
        if variant == "ort":
            return build_ort(source, target)
    raise ValueError(f"unknown variant '{variant}'")


def calibration_samples(data: DataSplits, count: int, seed: int) -> np.ndarray:
    """A seeded random subset of the training split: what the model sees in deployment, never validation data."""
    order = np.random.default_rng(seed).permutation(len(data.train.x))[:count]
    return np.ascontiguousarray(data.train.x[np.sort(order)])


# --- the gate ------------------------------------------------------------------------------------------------


def evaluate_artifact(path: Path, x: np.ndarray, y: np.ndarray, task: str, output_name: str) -> float:
    """The training metric over a split, the artifact run in ONNX Runtime: accuracy, or RMSE in target units."""
    output = onnx_runner(path)(x)[output_name]
    if task == "classification":
        return float((output.argmax(axis=1) == y).mean())
    target = y.reshape(output.shape) if y.size == output.size else y
    return float(np.sqrt(np.mean((output.astype(np.float64) - target) ** 2)))


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
    worst = max(
        (o.needed_atol for c in result.checks for o in c.outputs.values() if not o.passed),
        default=math.inf,
    )
    if result.judged_by == "accuracy":
        return "non-finite outputs"
    return f"differs from PyTorch: needs atol {worst:.2e} > {result.atol:g} at rtol {result.rtol:g}"


# --- the stage -----------------------------------------------------------------------------------------------


def drop_variants(bundle: Bundle) -> None:
    """Forget (and delete) the variants of an earlier optimize run, so a rerun starts from the exported originals."""
    manifest = bundle.manifest
    old = [a for a in manifest.artifacts if a.variant is not None]
    for artifact in old:
        bundle.path(artifact.path).unlink(missing_ok=True)
    paths = {a.path for a in old}
    manifest.artifacts = [a for a in manifest.artifacts if a.variant is None]
    manifest.verification = [v for v in manifest.verification if v.artifact not in paths]
    manifest.variants = []


def latency_inputs(bundle: Bundle) -> dict[int, np.ndarray]:
    spec = bundle.manifest.inputs[0]
    low, high = bundle.manifest.preprocessing.input_range
    shape = tuple(int(d) for d in spec.shape[1:])
    return {batch: random_inputs(shape, spec.dtype, low, high, batch, seed=batch) for batch in BATCHES}


def optimize_bundle(
    bundle: Bundle,
    settings: ExportConfig,
    data: DataSplits,
    seed: int,
    parity: ParityCheck,
    say: Callable[[str], Any],
) -> list[VariantOutcome]:
    """Build, gate and measure every variant in ``settings.variants``; the manifest is saved at the end."""
    drop_variants(bundle)
    manifest = bundle.manifest
    source = next(a for a in manifest.artifacts if a.kind == "onnx" and a.precision == "fp32")
    source_path = bundle.verified_path(source)
    task, output_name, input_name = manifest.task, manifest.outputs[0].name, manifest.inputs[0].name
    reference = evaluate_artifact(source_path, data.val.x, data.val.y, task, output_name)
    source.accuracy = accuracy_gate(task, reference, reference, settings.max_accuracy_drop)
    calibration = calibration_samples(data, settings.calibration_samples, seed)

    outcomes = []
    for variant in settings.variants:
        outcome, verification = _one_variant(
            bundle, variant, source, source_path, settings, data, calibration, input_name, parity
        )
        outcomes.append(outcome)
        if outcome.status == "kept":
            say(f"[green]kept[/] {_kept_line(bundle, outcome.path, source)}")
        else:
            say(f"[bold red]{outcome.status}[/] {outcome.path}: {outcome.reason}")
        if verification is not None:
            manifest.verification = [v for v in manifest.verification if v.artifact != verification.artifact]
            manifest.verification.append(verification)

    if settings.latency_iterations:
        inputs = latency_inputs(bundle)
        for artifact in manifest.artifacts:
            if artifact.runtime == "onnxruntime" and artifact.kind in ("onnx", "ort"):
                artifact.latency = measure_latency(
                    bundle.verified_path(artifact), inputs, THREADS, settings.latency_iterations
                )
    manifest.variants = outcomes
    bundle.save()
    return outcomes


def _one_variant(
    bundle: Bundle,
    variant: Variant,
    source: Artifact,
    source_path: Path,
    settings: ExportConfig,
    data: DataSplits,
    calibration: np.ndarray,
    input_name: str,
    parity: ParityCheck,
) -> tuple[VariantOutcome, ArtifactVerification | None]:
    relative = VARIANT_FILES[variant]
    target = bundle.path(relative)
    target.unlink(missing_ok=True)
    try:
        built = build_variant(variant, source_path, target, settings, calibration, input_name)
        artifact = Artifact(
            kind=built.kind,
            precision=built.precision,
            opset=source.opset,
            runtime="onnxruntime",
            variant=variant,
            derived_from=source.path,
            recipe=built.recipe,
            **file_entry(bundle.root, target),
        )
        value = evaluate_artifact(target, data.val.x, data.val.y, bundle.manifest.task, bundle.manifest.outputs[0].name)
        assert source.accuracy is not None
        artifact.accuracy = accuracy_gate(
            bundle.manifest.task, value, source.accuracy.reference, settings.max_accuracy_drop
        )
        verification = parity(artifact)
    except Exception as exc:
        target.unlink(missing_ok=True)
        return VariantOutcome(
            variant=variant, path=relative, status="failed", reason=f"{type(exc).__name__}: {first_line(exc)}"
        ), None
    if not artifact.accuracy.passed or not verification.passed:
        target.unlink(missing_ok=True)
        reason = describe_gate(artifact.accuracy) if not artifact.accuracy.passed else parity_problem(verification)
        return VariantOutcome(variant=variant, path=relative, status="refused", reason=reason), None
    bundle.manifest.artifacts.append(artifact)
    return VariantOutcome(variant=variant, path=relative, status="kept", reason=""), verification


def _kept_line(bundle: Bundle, path: str, source: Artifact) -> str:
    artifact = next(a for a in bundle.manifest.artifacts if a.path == path)
    gate = artifact.accuracy
    metric = f"{gate.metric} {gate.value:.4f} (fp32 {gate.reference:.4f})" if gate else ""
    return f"{path}: {artifact.bytes / 1024:.1f} KiB ({source.bytes / artifact.bytes:.2f}x smaller), {metric}"
