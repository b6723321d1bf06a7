"""Callables that run one artifact in its runtime: numpy batch in, {output name: numpy array} out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from torchport.errors import BundleError, first_line

if TYPE_CHECKING:
    import torch

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]
CHUNK = 256


def chunked(run_batch: Runner) -> Runner:
    """Run large input sets in chunks so memory stays flat; the artifacts' batch axis is dynamic anyway."""

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        parts = [run_batch(inputs[start : start + CHUNK]) for start in range(0, len(inputs), CHUNK)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    return run


def torch_runner(module: torch.nn.Module, output_names: list[str]) -> Runner:
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


def onnx_runner(path: Path) -> Runner:
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


def aoti_runner(path: Path, output_names: list[str]) -> Runner:
    import torch

    compiled = torch._inductor.aoti_load_package(str(path))

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outputs = compiled(torch.from_numpy(np.ascontiguousarray(inputs)))
        return {name: tensor.numpy() for name, tensor in zip(output_names, outputs, strict=True)}

    return chunked(run)
