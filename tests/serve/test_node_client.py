"""A Node.js client with nothing but the built-in ``fetch`` (node_fetch_client.mjs) against a real server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_helpers import ort_outputs

from torchport.runtimes.base import which_node

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLIENT = Path(__file__).with_name("node_fetch_client.mjs")
# the rule of tests/runtimes/conftest.py (not importable from here: tests/serve is not a package)
IN_CI = os.environ.get("CI", "").lower() == "true"


def node_or_skip() -> str:
    """Skip outside CI, fail in CI, when Node.js (18+, for the global fetch) is missing — as tests/runtimes do."""
    node = which_node()
    reason = "node is not on PATH (apt-get install nodejs)" if node is None else None
    if node is not None:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        if int(version.lstrip("v").split(".")[0]) < 18:
            reason = f"node {version} has no global fetch (18+ needed)"
    if reason is None:
        assert node is not None
        return node
    if IN_CI:
        pytest.fail(f"the Node.js client test is required in CI: {reason}")
    pytest.skip(reason)


def as_array(tensor: dict[str, Any]) -> np.ndarray:
    assert tensor["datatype"] == "FP32", tensor["datatype"]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def test_node_fetch_client_json_and_binary_infer_equal_local_onnxruntime(
    server: int, exported_digits: Path, tmp_path: Path
) -> None:
    node = node_or_skip()
    array = np.random.default_rng(7).uniform(0, 16, (3, 1, 8, 8)).astype(np.float32)
    request = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(array.shape), "data": array.ravel().tolist()}],
        "outputs": ["logits", "probabilities"],
    }
    (tmp_path / "inputs.json").write_text(json.dumps(request))
    out = tmp_path / "out.json"
    command = [node, str(CLIENT), str(server), "digits", str(tmp_path / "inputs.json"), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    expected = ort_outputs(exported_digits / "bundle" / "model.onnx", array)

    assert result["live"] == {"status": 200, "content_type": "application/json", "body": {"live": True}}
    assert result["ready"]["status"] == 200 and result["ready"]["body"]["ready"] is True
    metadata = result["metadata"]
    assert metadata["status"] == 200
    assert metadata["body"]["name"] == "digits" and "1" in metadata["body"]["versions"]
    assert metadata["body"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [o["name"] for o in metadata["body"]["outputs"]] == ["logits", "probabilities"]

    plain = result["json_infer"]
    assert plain["status"] == 200 and plain["content_type"].startswith("application/json"), plain
    assert plain["body"]["id"] == "node-json" and plain["body"]["model_name"] == "digits"
    got = {tensor["name"]: as_array(tensor) for tensor in plain["body"]["outputs"]}
    assert list(got) == ["logits", "probabilities"]
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-5, err_msg=f"JSON {name}")

    binary = result["binary_infer"]
    assert binary["status"] == 200, binary
    assert binary["content_type"] == "application/octet-stream"
    assert int(binary["header_length"]) < binary["body_bytes"]
    assert binary["header"]["id"] == "node-binary" and binary["header"]["model_name"] == "digits"
    outputs = binary["outputs"]
    assert outputs["logits"]["binary"] is True and outputs["probabilities"]["binary"] is False
    assert binary["body_bytes"] == int(binary["header_length"]) + expected["logits"].nbytes
    for name, value in expected.items():
        np.testing.assert_allclose(as_array(outputs[name]), value, rtol=0, atol=1e-5, err_msg=f"binary {name}")
