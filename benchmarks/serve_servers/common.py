"""What the hand-written and LitServe servers share: the bundle's ONNX session, and the v2 JSON they speak.

Deliberately not torchport's serving code: these are the servers a user writes without torchport. The ORT session
is set up exactly as ``torchport serve`` sets up its own (``intra_op_num_threads`` = ``--threads``, one inter-op
thread, sequential execution, all graph optimisations), so the three servers differ only in what is around it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from torchport.sessions import onnxruntime_session


def load_session(bundle: Path, threads: int) -> tuple[ort.InferenceSession, str, list[str]]:
    """The bundle's ``model.onnx`` session, its input name and its output names (in manifest order).

    The session is made exactly as torchport serve makes its own, so only the serving around it differs.
    """
    manifest = json.loads((bundle / "manifest.json").read_text())
    session = onnxruntime_session(bundle / "model.onnx", threads)
    return session, manifest["inputs"][0]["name"], [spec["name"] for spec in manifest["outputs"]]


def model_name(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["name"])


def decode(request: dict[str, Any]) -> np.ndarray:
    """The first input of a v2 JSON request as float32 of its declared shape."""
    tensor = request["inputs"][0]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def encode(name: str, output_names: list[str], outputs: list[np.ndarray]) -> dict[str, Any]:
    """A v2 JSON response holding every output as flattened data."""
    return {
        "model_name": name,
        "model_version": "1",
        "outputs": [
            {"name": n, "datatype": "FP32", "shape": list(o.shape), "data": o.ravel().tolist()}
            for n, o in zip(output_names, outputs, strict=True)
        ],
    }


def server_arguments(description: str | None) -> argparse.ArgumentParser:
    """The options both comparison servers take, as benchmarks/serve.py starts them."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    return parser
