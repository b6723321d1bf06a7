"""Operating the server: graceful shutdown with requests in flight, 503 under overload, several bundles and an
INT8 variant served side by side — each against a real server process and checked against local ONNX Runtime."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_helpers import digits, http, metric, ort_outputs, running_server, server_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
INFER = "/v2/models/digits/infer"


# --- helpers ------------------------------------------------------------------------------------------------------


def json_body(array: np.ndarray, **extra: Any) -> bytes:
    tensor = {"name": "input", "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist()}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def binary_body(array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request asking both outputs back as raw bytes."""
    payload = np.ascontiguousarray(array, dtype="<f4").tobytes()
    tensor = {"name": "input", "shape": list(array.shape), "datatype": "FP32"}
    header = {
        "inputs": [{**tensor, "parameters": {"binary_data_size": len(payload)}}],
        "parameters": {"binary_data_output": True},
    }
    text = json.dumps(header).encode()
    return text + payload, {"Inference-Header-Content-Length": str(len(text))}


def outputs_of(status: int, headers: dict[str, str], body: bytes) -> dict[str, np.ndarray]:
    """The output tensors of a 200 response, JSON or binary."""
    assert status == 200, (status, body[:300])
    length = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
    if length is None:
        document = json.loads(body)
        return {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in document["outputs"]}
    document = json.loads(body[: int(length)])
    offset, found = int(length), {}
    for o in document["outputs"]:
        size = o["parameters"]["binary_data_size"]
        found[o["name"]] = np.frombuffer(body[offset : offset + size], dtype="<f4").reshape(o["shape"])
        offset += size
    assert offset == len(body)
    return found


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=atol, err_msg=name)


def port_is_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


# --- graceful shutdown ----------------------------------------------------------------------------------------


def _open_slow_request(port: int, body: bytes) -> socket.socket:
    """Send an infer request's headers and half its body: the server is now reading it (the model's batcher
    waits for it, holding every other request it has queued), until the rest is sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def _finish_slow_request(sock: socket.socket, body: bytes) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(body[len(body) // 2 :])
    chunks = []
    while chunk := sock.recv(65536):  # the server closes the connection: it is shutting down
        chunks.append(chunk)
    sock.close()
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers.get("content-length", len(payload))) == len(payload)
    return int(lines[0].split()[1]), headers, payload


def _send_then_read(
    port: int, body: bytes, headers: dict[str, str], sent: threading.Event
) -> tuple[int, dict[str, str], bytes]:
    connection = HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", INFER, body=body, headers=headers)
        sent.set()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_sigterm_finishes_requests_in_flight_then_exits_0(exported_digits: Path, tmp_path: Path) -> None:
    """Requests waiting in the batcher, and one whose body is still arriving, when SIGTERM comes: every one is
    answered correctly, no new connection is accepted meanwhile, and the process then exits 0."""
    model = exported_digits / "bundle" / "model.onnx"
    log = tmp_path / "server.log"
    slow_array = digits(2, seed=500)
    slow_body = json_body(slow_array)
    arrays = [digits(1 + i % 3, seed=600 + i) for i in range(6)]
    requests = [binary_body(a) if i % 2 else (json_body(a), {}) for i, a in enumerate(arrays)]
    sent = [threading.Event() for _ in arrays]
    # while a request for the model is still being read, its batcher waits up to 20 s for batch-mates
    # (the pool is the outer context: on a failure the server is killed first, so no thread waits on it)
    with (
        ThreadPoolExecutor(len(arrays)) as pool,
        server_process([exported_digits / "bundle"], log, "--max-batch-delay-ms", "20000") as (process, port),
    ):
        slow = _open_slow_request(port, slow_body)
        time.sleep(0.5)  # the server reads the slow request's headers and starts on its body
        futures = [pool.submit(_send_then_read, port, *r, e) for r, e in zip(requests, sent, strict=True)]
        assert all(event.wait(30) for event in sent)
        time.sleep(0.5)  # ... and reads, parses and queues the others
        assert not any(f.done() for f in futures), "the requests should still be waiting in the batcher"

        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None, f"the server exited with requests in flight: {log.read_text()[-2000:]}"
        assert not any(f.done() for f in futures), [f.result()[0] for f in futures if f.done()]
        assert port_is_closed(port), "a shutting-down server must not accept new connections"

        slow_status, _, slow_answer = _finish_slow_request(slow, slow_body)
        answers = [f.result(timeout=30) for f in futures]

        assert_same(outputs_of(slow_status, {}, slow_answer), ort_outputs(model, slow_array))
        for array, (status, headers, body) in zip(arrays, answers, strict=True):
            assert_same(outputs_of(status, headers, body), ort_outputs(model, array))
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within 20 s of SIGTERM: {log.read_text()[-2000:]}")
        assert port_is_closed(port)
        assert code == 0, f"exit code {code} after SIGTERM (expected 0): {log.read_text()[-2000:]}"


# --- overload ---------------------------------------------------------------------------------------------------


def test_a_request_refused_before_its_body_is_read_still_gets_its_answer(exported_digits: Path, tmp_path: Path) -> None:
    """A request refused on arrival (here: an unknown model) from a client that asked to close the connection (as
    urllib does) while still uploading a large body: the client reads the JSON error, not a broken pipe or a reset
    (closing a socket with unread bytes resets it)."""
    body = bytes(8 << 20)  # larger than the socket buffers: the upload is still running when the answer is ready
    with running_server(exported_digits / "bundle", tmp_path / "log", "--no-access-log") as port:
        for _ in range(5):
            status, _, answer = http(port, "POST", "/v2/models/nope/infer", body, {"content-type": "application/json"})
            assert status == 404 and "nope" in json.loads(answer)["error"], (status, answer[:200])


def test_full_queue_answers_503_and_the_rest_are_served(exported_digits: Path, tmp_path: Path) -> None:
    """--max-queue 1: while one big request runs (~0.15 s of ORT on one thread), one more may wait; the others
    are turned away at once with a JSON 503, counted in /metrics, and the server carries on."""
    model = exported_digits / "bundle" / "model.onnx"
    arrays = [digits(4096, seed=700 + i) for i in range(10)]
    bodies = [binary_body(array) for array in arrays]
    with running_server(exported_digits / "bundle", tmp_path / "log", "--max-queue", "1", "--no-access-log") as port:
        before = http(port, "GET", "/metrics")[2].decode()
        statuses: list[int] = []
        for _ in range(3):  # a flood rarely fails to overflow a queue of one; try again if it did
            with ThreadPoolExecutor(len(bodies)) as pool:
                answers = list(pool.map(lambda b: http(port, "POST", INFER, b[0], b[1]), bodies))
            for index, (status, headers, body) in enumerate(answers):
                statuses.append(status)
                assert status in (200, 503), (status, body[:300])
                if status == 503:
                    assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/json"
                    message = json.loads(body)["error"]
                    assert "queue" in message.lower() and "digits" in message, message
                else:
                    assert_same(outputs_of(status, headers, body), ort_outputs(model, arrays[index]))
            if 503 in statuses:
                break
        assert statuses.count(503) >= 1 and statuses.count(200) >= 2, statuses

        assert http(port, "GET", "/v2/health/live")[0] == 200
        assert http(port, "GET", "/v2/health/ready")[0] == 200
        small = digits(2, seed=1)
        assert_same(outputs_of(*http(port, "POST", INFER, json_body(small))), ort_outputs(model, small))

        after = http(port, "GET", "/metrics")[2].decode()
        overloads = metric(after, "torchport_errors_total", code="503") - metric(
            before, "torchport_errors_total", code="503"
        )
        infers = metric(after, "torchport_requests_total", endpoint="infer") - metric(
            before, "torchport_requests_total", endpoint="infer"
        )
        assert overloads == statuses.count(503), (overloads, statuses)
        assert infers == len(statuses) + 1
        assert metric(after, "torchport_queue_depth", model="digits:1") <= 1


# --- several bundles and the INT8 variant in one process ---------------------------------------------------------


@pytest.fixture(scope="module")
def iris_bundle(exported_iris: Path) -> Path:
    """A second, different model beside digits."""
    return exported_iris / "bundle"


@pytest.fixture(scope="module")
def multi_server(digits_with_int8: Path, iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log = tmp_path_factory.mktemp("multi") / "server.log"
    with server_process([digits_with_int8, iris_bundle], log, "--no-access-log") as (_, port):
        yield port


def test_each_bundle_and_variant_has_its_metadata(multi_server: int) -> None:
    def metadata(path: str) -> dict[str, Any]:
        status, _, body = http(multi_server, "GET", path)
        assert status == 200, (path, body[:300])
        document: dict[str, Any] = json.loads(body)
        return document

    digits_meta = metadata("/v2/models/digits")
    assert digits_meta["name"] == "digits" and digits_meta["versions"] == ["1", "int8"]
    assert digits_meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert metadata("/v2/models/digits/versions/int8")["inputs"] == digits_meta["inputs"]
    alias = metadata("/v2/models/digits.int8")
    assert alias["name"] == "digits.int8" and alias["versions"] == ["1"]
    iris = metadata("/v2/models/iris_mlp")
    assert iris["name"] == "iris_mlp" and iris["versions"] == ["1"]
    assert iris["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [(o["name"], o["shape"]) for o in iris["outputs"]] == [("logits", [-1, 3]), ("probabilities", [-1, 3])]
    for name, version in (("digits", "1"), ("digits", "int8"), ("digits.int8", "1"), ("iris_mlp", "1")):
        status, _, body = http(multi_server, "GET", f"/v2/models/{name}/versions/{version}/ready")
        assert (status, json.loads(body)["ready"]) == (200, True), (name, version)


def test_infer_on_every_model_and_the_int8_variant_equals_its_own_onnx_file(
    multi_server: int, digits_with_int8: Path, iris_bundle: Path
) -> None:
    fp32, int8 = digits_with_int8 / "model.onnx", digits_with_int8 / "model.int8.onnx"
    iris_arrays = [np.random.default_rng(800 + i).uniform(0, 8, (1 + i % 4, 4)).astype(np.float32) for i in range(8)]
    digit_arrays = [digits(1 + i % 4, seed=900 + i) for i in range(8)]
    # (path, model_name, model_version in the answer, array, the ONNX file it must equal)
    cases: list[tuple[str, str, str, np.ndarray, Path]] = []
    for i in range(8):
        cases += [
            ("/v2/models/digits/infer", "digits", "1", digit_arrays[i], fp32),
            ("/v2/models/digits/versions/1/infer", "digits", "1", digit_arrays[i], fp32),
            ("/v2/models/digits/versions/int8/infer", "digits", "int8", digit_arrays[i], int8),
            ("/v2/models/digits.int8/infer", "digits.int8", "1", digit_arrays[i], int8),
            ("/v2/models/iris_mlp/infer", "iris_mlp", "1", iris_arrays[i], iris_bundle / "model.onnx"),
        ]

    def call(case: tuple[str, str, str, np.ndarray, Path]) -> tuple[int, dict[str, str], bytes]:
        path, _, _, array, _ = case
        if len(array) % 2:
            body, headers = binary_body(array)
            return http(multi_server, "POST", path, body, headers)
        return http(multi_server, "POST", path, json_body(array))

    with ThreadPoolExecutor(12) as pool:  # all at once: each model's batcher must keep to its own requests
        answers = list(pool.map(call, cases))
    int8_vs_fp32 = 0.0
    for (path, name, version, array, onnx_file), (status, headers, body) in zip(cases, answers, strict=True):
        got = outputs_of(status, headers, body)
        length = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
        document = json.loads(body[: int(length)] if length else body)
        assert (document["model_name"], document["model_version"]) == (name, version), path
        assert_same(got, ort_outputs(onnx_file, array), atol=1e-5)
        if onnx_file == int8:
            int8_vs_fp32 = max(int8_vs_fp32, float(np.abs(got["logits"] - ort_outputs(fp32, array)["logits"]).max()))
    # the int8 answers really come from the quantised graph, not from model.onnx
    assert int8_vs_fp32 > 1e-4


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v2/models/digits/versions/fp16", "no version 'fp16'"),
        ("GET", "/v2/models/iris_mlp/versions/int8", "no version 'int8'"),
        ("GET", "/v2/models/digits.int8/versions/int8/ready", "no version 'int8'"),
        ("POST", "/v2/models/digits/versions/2/infer", "no version '2'"),
        ("POST", "/v2/models/iris_mlp.int8/infer", "unknown model 'iris_mlp.int8'"),
    ],
)
def test_unknown_version_or_variant_is_a_json_404(multi_server: int, method: str, path: str, message: str) -> None:
    body = json_body(digits(1, seed=0)) if method == "POST" else None
    status, headers, answer = http(multi_server, method, path, body)
    assert status == 404, (status, answer[:300])
    assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/json"
    assert message in json.loads(answer)["error"], answer
    assert http(multi_server, "GET", "/v2/health/live")[0] == 200
