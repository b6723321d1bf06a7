"""A real server process, spoken to by tritonclient (Triton's own client), urllib and hypothesis."""

from __future__ import annotations

import gzip
import http.client as httplib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import BODY_LIMIT, digits, error_of, http, metric, ort_outputs, running_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_health_and_metadata_through_tritonclient(server: int) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{server}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
    assert not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("digits")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "probabilities"]
    client.close()


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (True, False), (False, True)])
def test_infer_through_tritonclient_equals_local_onnxruntime(
    server: int, exported_digits: Path, binary_in: bool, binary_out: bool
) -> None:
    import tritonclient.http as triton

    array = digits(5, seed=int(binary_in) * 2 + int(binary_out))
    expected = ort_outputs(exported_digits / "bundle" / "model.onnx", array)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server}")
    tensor = triton.InferInput("input", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary_in)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary_out) for name in ("probabilities", "logits")]
    result = client.infer("digits", [tensor], outputs=outputs, request_id="req-42", model_version="1")
    response = result.get_response()
    assert response["id"] == "req-42" and [o["name"] for o in response["outputs"]] == ["probabilities", "logits"]
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, rtol=1e-5, atol=1e-6)
    only = client.infer("digits", [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=binary_out)])
    assert only.as_numpy("probabilities") is None
    np.testing.assert_allclose(only.as_numpy("logits"), expected["logits"], rtol=1e-5, atol=1e-6)
    client.close()


def test_concurrent_requests_are_batched_and_split_back(server: int, exported_digits: Path) -> None:
    arrays = [digits(1 + i % 3, seed=100 + i) for i in range(48)]

    def call(index: int) -> tuple[int, Any]:
        array = arrays[index]
        inputs = [{"name": "input", "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist()}]
        if index % 8 == 7:  # a bad request among them fails alone
            inputs[0]["datatype"] = "INT64"
        status, _, body = http(server, "POST", "/v2/models/digits/infer", json.dumps({"inputs": inputs}).encode())
        return status, json.loads(body)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(len(arrays))))
    for index, (status, document) in enumerate(answers):
        if index % 8 == 7:
            assert status == 400 and "input 'input'" in document["error"]
            continue
        assert status == 200, document
        logits = np.asarray(document["outputs"][0]["data"], dtype=np.float32).reshape(document["outputs"][0]["shape"])
        np.testing.assert_allclose(
            logits, ort_outputs(exported_digits / "bundle" / "model.onnx", arrays[index])["logits"], rtol=1e-5
        )
    _, _, text = http(server, "GET", "/metrics")
    metrics = text.decode()
    for name in ("torchport_requests_total", "torchport_errors_total", "torchport_request_duration_seconds_bucket"):
        assert name in metrics
    # per model and protocol: every one of the 48 requests named digits, the 6 bad ones too
    assert metric(metrics, "torchport_requests_total", protocol="rest", endpoint="infer", model="digits:1") >= 48
    assert metric(metrics, "torchport_errors_total", protocol="rest", code="400", model="digits:1") >= 6
    assert metric(metrics, "torchport_request_duration_seconds_count", protocol="rest", model="digits:1") >= 48
    assert re.search(r'torchport_batch_size_count\{model="digits:1"\} \d', metrics)
    assert 'torchport_queue_depth{model="digits:1"}' in metrics


def _binary(header: dict[str, Any], payload: bytes, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + payload, {"Inference-Header-Content-Length": str(len(text) if length is None else length)}


def _tensor(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [1.0] * 64, **changes}]}


BINARY_INPUT = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": 256}}
INFER = "/v2/models/digits/infer"
MALFORMED: list[tuple[str, str, str, bytes, dict[str, str], int, str]] = [
    ("bad json", "POST", INFER, b'{"inputs": [', {}, 400, "not valid JSON"),
    ("not an object", "POST", INFER, b"[1, 2]", {}, 400, "JSON object"),
    ("empty body", "POST", INFER, b"", {}, 400, "empty"),
    ("no inputs", "POST", INFER, b'{"id": "x"}', {}, 400, "'inputs'"),
    ("unknown input", "POST", INFER, json.dumps(_tensor(name="pixels")).encode(), {}, 400, "pixels"),
    ("wrong dtype", "POST", INFER, json.dumps(_tensor(datatype="INT64")).encode(), {}, 400, "INT64"),
    ("wrong rank", "POST", INFER, json.dumps(_tensor(shape=[1, 64])).encode(), {}, 400, "rank"),
    ("wrong dim", "POST", INFER, json.dumps(_tensor(shape=[1, 2, 8, 8], data=[0] * 128)).encode(), {}, 400, "dim"),
    ("count mismatch", "POST", INFER, json.dumps(_tensor(data=[1.0] * 63)).encode(), {}, 400, "63 values"),
    ("nan", "POST", INFER, json.dumps(_tensor(data=[float("nan")] * 64)).encode(), {}, 400, "NaN"),
    ("strings", "POST", INFER, json.dumps(_tensor(data=["a"] * 64)).encode(), {}, 400, "numbers"),
    ("id not string", "POST", INFER, json.dumps({**_tensor(), "id": 5}).encode(), {}, 400, "'id'"),
    ("unknown output", "POST", INFER, json.dumps({**_tensor(), "outputs": [{"name": "x"}]}).encode(), {}, 400, "x"),
    ("truncated binary", "POST", INFER, *_binary({"inputs": [BINARY_INPUT]}, b"\0" * 100), 400, "truncated"),
    ("extra binary", "POST", INFER, *_binary({"inputs": [BINARY_INPUT]}, b"\0" * 300), 400, "no input claims"),
    ("header length past body", "POST", INFER, *_binary(_tensor(), b"", length=10**6), 400, "body holds only"),
    ("header length not int", "POST", INFER, b"{}", {"Inference-Header-Content-Length": "ten"}, 400, "integer"),
    ("bad gzip", "POST", INFER, b"garbage", {"Content-Encoding": "gzip"}, 400, "decompressed"),
    ("huge body", "POST", INFER, b"{" + b" " * (BODY_LIMIT + 10) + b"}", {}, 413, "limit"),
    ("unknown model", "POST", "/v2/models/nope/infer", json.dumps(_tensor()).encode(), {}, 404, "nope"),
    ("unknown version", "GET", "/v2/models/digits/versions/9", b"", {}, 404, "version"),
    ("wrong method", "GET", INFER, b"", {}, 405, "method"),
    ("unknown route", "GET", "/v3/everything", b"", {}, 404, "not found"),
]


def test_malformed_requests_get_json_4xx_and_the_server_stays_up(server: int) -> None:
    assert len({case[0] for case in MALFORMED}) >= 12
    for label, method, path, body, headers, status, message in MALFORMED:
        got, _, answer = http(server, method, path, body if method == "POST" else None, headers)
        assert got == status, (label, got, answer[:200])
        assert message.lower() in error_of(answer).lower(), (label, answer[:200])
        assert http(server, "GET", "/v2/health/live")[0] == 200, label
    good = gzip.compress(json.dumps(_tensor()).encode())
    assert http(server, "POST", INFER, good, {"Content-Encoding": "gzip"})[0] == 200


def test_openapi_document(server: int) -> None:
    status, _, body = http(server, "GET", "/openapi.json")
    document = json.loads(body)
    assert status == 200 and "/v2/models/{name}/infer" in document["paths"]
    content = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/InferenceRequest"}
    assert "InferenceRequest" in document["components"]["schemas"]


def test_api_key(exported_digits: Path, tmp_path: Path) -> None:
    env = {"TORCHPORT_API_KEY": "s3cret"}
    body = json.dumps(_tensor()).encode()
    log = tmp_path / "log"
    with running_server(exported_digits / "bundle", log, "--no-access-log", env=env, via_cli=True) as port:
        assert http(port, "GET", "/v2/health/live")[0] == 200
        assert http(port, "GET", "/v2")[0] == 401
        assert http(port, "POST", INFER, body)[0] == 401
        assert http(port, "POST", INFER, body, {"Authorization": "Bearer wrong"})[0] == 401
        assert http(port, "POST", INFER, body, {"Authorization": "Bearer s3cret"})[0] == 200
        assert http(port, "GET", "/v2/models/digits", None, {"X-API-Key": "s3cret"})[0] == 200


# --- fuzzing: generated requests, none may produce a 5xx ---------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_shape = st.lists(st.integers(-2, 70) | st.sampled_from([1, 8, 2**40]), max_size=5) | _json
_data = (
    st.lists(st.floats(width=32) | st.integers(-(2**70), 2**70), max_size=130)
    | st.lists(st.floats(0, 16, width=32), min_size=64, max_size=64)
    | _json
)
_tensor_strategy = st.fixed_dictionaries(
    {"name": st.sampled_from(["input", "pixels", ""]) | _json},
    optional={
        "shape": st.sampled_from([[1, 1, 8, 8], [2, 1, 8, 8]]) | _shape,
        "datatype": st.sampled_from(["FP32", "FP16", "INT64", "BYTES"]) | _json,
        "data": _data,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-5, 600) | _json}) | _json,
    },
)
_request = st.fixed_dictionaries(
    {"inputs": st.lists(_tensor_strategy, max_size=2) | _json},
    optional={
        "id": st.text(max_size=5) | _json,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["logits", "x"]) | _json}), max_size=3),
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": st.booleans() | _json}) | _json,
    },
)
_path = st.sampled_from(
    [INFER, "/v2/models/digits/versions/1/infer", "/v2/models/x/infer", "/v2/models/digits", "/v2", "/v2/health/ready"]
) | st.text(alphabet="/abcdv2.%?", max_size=20).map(lambda s: "/" + s)


@st.composite
def _body(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=300)), {}
    document = draw(_request) if kind < 3 else draw(_json)
    text = json.dumps(document).encode()
    if kind == 2:
        payload = draw(st.binary(max_size=600))
        length = draw(st.sampled_from([str(len(text)), str(len(text) + 3), "-1", "x"]))
        return text + payload, {"Inference-Header-Content-Length": length}
    return text, {}


class _Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = httplib.HTTPConnection("127.0.0.1", port, timeout=30)
        self.sent = 0

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body if method == "POST" else None, headers=headers)
                response = self.conn.getresponse()
                self.sent += 1
                return response.status, response.read()
            except (httplib.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = httplib.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def test_fuzzed_requests_never_get_a_5xx(server: int) -> None:
    connection = _Connection(server)

    @settings(
        max_examples=600,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(method=st.sampled_from(["POST", "POST", "POST", "GET"]), path=_path, body=_body())
    def check(method: str, path: str, body: tuple[bytes, dict[str, str]]) -> None:
        status, answer = connection.request(method, path, *body)
        assert status < 500 or (status == 503 and b"error" in answer), (status, answer[:300])
        if status >= 400:
            assert "error" in json.loads(answer)

    check()
    assert connection.sent >= 500
    assert http(server, "GET", "/v2/health/live")[0] == 200


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_busy_port_is_one_line_and_exit_2(exported_digits: Path) -> None:
    """uvicorn alone exits 1 (which says "a check failed") with its own log line when it cannot bind."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "torchport.cli", "serve", str(exported_digits / "bundle"), "--port", str(port)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"error: --port {port}: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
