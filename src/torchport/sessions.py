"""Callables that run one artifact in its engine (a PyTorch module, ONNX Runtime, an AOTInductor package): numpy
batch in, {output name: numpy array} out. "Predictor", not "runner": runners are the standalone programs in a bundle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from torchport.errors import BundleError, first_line

if TYPE_CHECKING:
    import torch

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]
CHUNK = 256


def chunked(predict_batch: Predictor) -> Predictor:
    """Run large input sets in chunks so memory stays flat; the artifacts' batch axis is dynamic anyway."""

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        parts = [predict_batch(inputs[start : start + CHUNK]) for start in range(0, len(inputs), CHUNK)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    return run


def torch_predictor(module: torch.nn.Module, output_names: list[str]) -> Predictor:
    import torch

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outputs = module(torch.from_numpy(np.ascontiguousarray(inputs)))
        return {name: tensor.numpy() for name, tensor in zip(output_names, outputs, strict=True)}

    return chunked(run)


def onnxruntime_session(path: Path | bytes, threads: int = 1, optimize: bool = True):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_predictor(path: Path) -> Predictor:
    try:
        session = onnxruntime_session(path)
    except Exception as exc:  # a bundle's file that is no ONNX model (its checksum only says it is unchanged)
        raise BundleError(f"{path}: ONNX Runtime cannot load it: {type(exc).__name__}: {first_line(exc)}") from None
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        results = session.run(output_names, {input_name: inputs})
        return dict(zip(output_names, results, strict=True))

    return chunked(run)


def aoti_predictor(path: Path, output_names: list[str]) -> Predictor:
    import torch

    compiled = torch._inductor.aoti_load_package(str(path))

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outputs = compiled(torch.from_numpy(np.ascontiguousarray(inputs)))
        return {name: tensor.numpy() for name, tensor in zip(output_names, outputs, strict=True)}

    return chunked(run)
