"""The contenders: PyTorch eager, torch.compile (inductor), the .pt2, ONNX Runtime per artifact, and OpenVINO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from torchport.bench.inference import EAGER, ORT_FP32, Call, Contender


def eager_contender(module: Any) -> Contender:
    import torch

    def prepare(threads: int, array: np.ndarray) -> Call:
        x = torch.from_numpy(np.ascontiguousarray(array))

        def call() -> Any:
            with torch.inference_mode():
                return module(x)

        return call

    return Contender(EAGER, "pytorch", prepare)


def compile_contender(module: Any) -> Contender:
    """``torch.compile(module, dynamic=False)`` per batch size: a static graph for each, as a deployment would pin.

    The compile happens in the first (untimed) call; its time is the measurement's ``prepare_s``.
    """
    import torch

    def prepare(threads: int, array: np.ndarray) -> Call:
        compiled = torch.compile(module, dynamic=False)
        x = torch.from_numpy(np.ascontiguousarray(array))

        def call() -> Any:
            with torch.inference_mode():
                return compiled(x)

        return call

    return Contender("torch.compile", "pytorch", prepare)


def ort_contender(name: str, path: Path, artifact: str | None = None, precision: str = "fp32") -> Contender:
    from torchport.sessions import onnxruntime_session

    def prepare(threads: int, array: np.ndarray) -> Call:
        session = onnxruntime_session(path, threads=threads)
        feed = {session.get_inputs()[0].name: array}
        first = [session.get_outputs()[0].name]
        return lambda: session.run(first, feed)

    return Contender(name, "onnxruntime", prepare, artifact or path.name, precision)


def aoti_contender(path: Path, artifact: str | None = None) -> Contender:
    """The AOTInductor ``.pt2`` package, loaded once per cell (loading is outside the timing)."""
    import torch

    def prepare(threads: int, array: np.ndarray) -> Call:
        compiled = torch._inductor.aoti_load_package(str(path))
        x = torch.from_numpy(np.ascontiguousarray(array))

        def call() -> Any:
            with torch.inference_mode():
                return compiled(x)

        return call

    return Contender("aoti .pt2", "pytorch", prepare, artifact or path.name)


def openvino_contender(path: Path, artifact: str | None = None) -> Contender:
    """OpenVINO's CPU plugin on the fp32 ONNX model, reshaped to each cell's static batch (as OpenVINO prefers).

    f32 precision is pinned: on CPUs with bf16 units the plugin would otherwise trade accuracy for speed.
    """

    def prepare(threads: int, array: np.ndarray) -> Call:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({model.inputs[0]: ov.PartialShape(list(array.shape))})
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        first = compiled.outputs[0]

        def call() -> Any:
            return request.infer({0: array})[first]

        return call

    return Contender("openvino fp32", "openvino", prepare, artifact or path.name)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def model_contenders(
    module: Any, onnx: dict[str, Path], compile: bool = True, aoti: Path | None = None
) -> list[Contender]:
    """Eager first (the reference), torch.compile, the .pt2, ``ort <name>`` for each path (``fp32`` first), then
    OpenVINO on the fp32 model when it is installed."""
    contenders = [eager_contender(module)]
    if compile:
        contenders.append(compile_contender(module))
    if aoti is not None:
        contenders.append(aoti_contender(aoti))
    for name, path in sorted(onnx.items(), key=lambda item: item[0] != "fp32"):
        label = {"fp32": ORT_FP32, "ort": "ort .ort format"}.get(name, f"ort {name}")
        precision = name if name in ("int8", "fp16") else "fp32"
        contenders.append(ort_contender(label, path, precision=precision))
    if "fp32" in onnx and openvino_available():
        contenders.append(openvino_contender(onnx["fp32"]))
    return contenders
