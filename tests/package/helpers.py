"""What several hand-off tests read: the bundle's golden tensors and files, and a tolerance check."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import urllib.request
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np

from torchport.bundle.manifest import Bundle, read_bundle
from torchport.package.common import tolerance


def golden(bundle_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The golden inputs and reference outputs by name, read from the raw files the manifest describes."""
    bundle = read_bundle(bundle_dir)
    inputs = {t.name: bundle.read_tensor(t) for t in bundle.manifest.golden.inputs}
    outputs = {t.name: bundle.read_tensor(t) for t in bundle.manifest.golden.outputs}
    return inputs, outputs


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifact_sha(bundle: Bundle, variant: str | None) -> str:
    return next(a.sha256 for a in bundle.manifest.artifacts if a.kind == "onnx" and a.variant == variant)


def assert_close(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], bundle_dir: Path) -> None:
    """Every expected output within the tolerance the bundle was verified with (PyTorch is the reference)."""
    atol, rtol = tolerance(read_bundle(bundle_dir).manifest)
    assert set(got) >= set(expected)
    for name, reference in expected.items():
        np.testing.assert_allclose(np.asarray(got[name]), reference, atol=atol, rtol=rtol, err_msg=name)


@cache
def triton_model_config() -> ModuleType:
    """Triton's ``model_config_pb2`` (from ``tritonclient[grpc]``), loaded by its file alone.

    ``import tritonclient.grpc`` would also register Triton's v2 gRPC service messages (``inference.*``) in
    protobuf's default pool, where ``kserve`` registers the same names: whichever comes second fails to import.
    ``model_config.proto`` holds only the config messages, which nothing else defines.
    """
    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def infer(port: int, inputs: dict[str, np.ndarray], model: str = "digits") -> dict[str, np.ndarray]:
    """One v2 JSON infer request to a server on 127.0.0.1 (no proxy), its outputs as arrays."""
    tensors = [
        {"name": n, "shape": list(a.shape), "datatype": "FP32", "data": a.ravel().tolist()} for n, a in inputs.items()
    ]
    url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
    request = urllib.request.Request(url, json.dumps({"inputs": tensors}).encode(), method="POST")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as reply:
        answer = json.load(reply)
    return {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in answer["outputs"]}
