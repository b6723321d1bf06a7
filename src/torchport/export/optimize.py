"""How each optimised variant of ``model.onnx`` is made, all by ONNX Runtime's own tools (no quantizer or
converter of ours):

- ``optimized``: the graph after ONNX Runtime's extended (CPU, portable across x86/ARM) optimisations, saved
  offline so a session need not redo them;
- ``int8``: static QDQ quantization calibrated on training samples after ``quant_pre_process``, or dynamic
  quantization for graphs without convolutions (linear/recurrent models);
- ``fp16``: half-precision weights with float32 inputs and outputs kept for callers;
- ``ort``: the ORT format for ONNX Runtime Mobile.

Every builder has the same shape, ``(VariantSource, target) -> Recipe``, so the catalogue in
``export/variants.py`` can hold them side by side. Whether a variant is kept (its accuracy gate and parity) is
decided in ``verify/variants.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchport.config import ExportConfig
from torchport.data import DataSplits

CALIBRATION_BATCH = 32
RECURRENT_OPS = {"LSTM", "GRU", "RNN", "Scan", "Loop"}
Recipe = dict[str, str | int | float | bool]  # the settings that made a variant, recorded in the manifest


@dataclass(frozen=True)
class VariantSource:
    """What a variant is made from. Only INT8 reads the settings and calibration samples, but one shape for all
    builders lets the variants sit in one table."""

    path: Path
    settings: ExportConfig
    calibration: np.ndarray
    input_name: str


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


def calibration_samples(data: DataSplits, count: int, seed: int) -> np.ndarray:
    """A seeded random subset of the training split: what the model sees in deployment, never validation data."""
    order = np.random.default_rng(seed).permutation(len(data.train.x))[:count]
    return np.ascontiguousarray(data.train.x[np.sort(order)])


# --- graph optimisation --------------------------------------------------------------------------------------


def build_optimized(source: VariantSource, target: Path) -> Recipe:
    """Offline graph optimisation at the extended level: fusions that stay valid on any CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source.path), sess_options=options, providers=["CPUExecutionProvider"])
    return {"tool": "onnxruntime", "level": "extended"}


# --- INT8 ----------------------------------------------------------------------------------------------------


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


def build_int8(source: VariantSource, target: Path) -> Recipe:
    from onnxruntime.quantization import quantize_dynamic

    settings = source.settings
    mode = int8_mode(source.path, settings.int8_mode)
    recipe: Recipe = {"tool": "onnxruntime.quantization", "mode": mode}
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        recipe["pre_process"] = _pre_process(source.path, prepared)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(target), per_channel=settings.per_channel)
            recipe["per_channel"] = settings.per_channel
            return recipe
        _quantize_static(prepared, target, source)
    recipe.update(
        {
            "format": "QDQ",
            "calibration": settings.calibration_method,
            "calibration_samples": len(source.calibration),
            "per_channel": settings.per_channel,
            "activations": settings.int8_activations,
            "weights": "int8",
        }
    )
    return recipe


def _pre_process(source: Path, prepared: Path) -> bool:
    """``quant_pre_process`` into ``prepared``; False (and the graph copied as exported) where it cannot run."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(source), str(prepared))
    except Exception:  # symbolic shape inference does not know every op; quantize the graph as exported
        shutil.copyfile(source, prepared)
        return False
    return True


def _quantize_static(prepared: Path, target: Path, source: VariantSource) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings = source.settings
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    quantize_static(
        str(prepared),
        str(target),
        _calibration_reader(source.calibration, source.input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=settings.per_channel,
        calibrate_method=methods[settings.calibration_method],
        activation_type=QuantType.QUInt8 if settings.int8_activations == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )


def _calibration_reader(calibration: np.ndarray, input_name: str) -> Any:
    """The calibration samples in batches of ``CALIBRATION_BATCH``, as ONNX Runtime's calibrator pulls them."""
    from onnxruntime.quantization import CalibrationDataReader

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

    return Reader()


# --- FP16 and the ORT format ---------------------------------------------------------------------------------


def build_fp16(source: VariantSource, target: Path) -> Recipe:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source.path)), keep_io_types=True)
    onnx.save(model, str(target))
    return {"tool": "onnxruntime.transformers.float16", "keep_io_types": True}


def build_ort(source: VariantSource, target: Path) -> Recipe:
    """The ORT format for ONNX Runtime Mobile, with the converter's portable (no NCHWc) optimisations."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model.onnx"
        shutil.copyfile(source.path, model)
        convert_onnx_models_to_ort(
            model, output_dir=Path(scratch) / "out", optimization_styles=[OptimizationStyle.Fixed]
        )
        produced = Path(scratch) / "out" / "model.ort"
        if not produced.is_file():
            raise RuntimeError("the ORT converter wrote no model.ort")
        shutil.move(produced, target)
    return {"tool": "onnxruntime.tools.convert_onnx_models_to_ort", "style": "fixed"}
