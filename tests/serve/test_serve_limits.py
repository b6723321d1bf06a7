"""What a server owes the clients it cannot serve (issue 14): overload shed on arrival, before the body is read,
with ``Retry-After``; idle and slow connections closed after the read timeouts and connections over
``--limit-concurrency`` answered 503; a shutdown that cuts off an upload without a 500 or a traceback; and a model
that fails in ONNX Runtime answered 500 with a JSON body, never 4xx. Each against a real server process."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import http, metric, running_server, server_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

INFER = "/v2/models/digits/infer"


def json_body(array: np.ndarray) -> bytes:
    tensor = {"name": "input", "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def request_head(port: int, length: int, path: str = INFER) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from ``sock`` (by its Content-Length, or up to the close); (0, {}, b"") if the server
    closed the connection without answering."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            assert not data, f"the connection closed in the middle of a response head: {data[:300]!r}"
            return 0, {}, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``sock`` (anything it sends first is read and dropped); None if it is still
    open after ``seconds``."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


# --- finding 3: overload is shed on arrival, before the body is read ------------------------------------------


def test_full_queue_sheds_a_big_request_with_503_and_retry_after_before_its_body_is_sent(
    exported_digits: Path, tmp_path: Path
) -> None:
    """--max-queue 1 with one request admitted (its body still arriving): a second request declaring an 8 MB body
    gets its JSON 503 with Retry-After after sending only its headers; the first is then served, and /metrics
    counts the 503."""
    body = json_body(np.zeros((2, 1, 8, 8), np.float32))
    log = tmp_path / "server.log"
    with running_server(exported_digits / "bundle", log, "--max-queue", "1", "--no-access-log") as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
            first.sendall(request_head(port, len(body)) + body[: len(body) // 2])
            time.sleep(0.5)  # the server admits it and waits for the rest of its body
            with socket.create_connection(("127.0.0.1", port), timeout=10) as big:
                big.sendall(request_head(port, 8 * 1024 * 1024))  # the headers only: no byte of the body
                started = time.monotonic()
                status, headers, answer = read_response(big, timeout=5)
                assert status == 503, (status, answer[:300], log.read_text()[-1000:])
                assert time.monotonic() - started < 2
                assert int(headers["retry-after"]) >= 1, headers
                assert headers["content-type"] == "application/json"
                assert "queue" in json.loads(answer)["error"], answer
            first.sendall(body[len(body) // 2 :])
            status, _, answer = read_response(first, timeout=10)
            assert status == 200, answer[:300]
        assert metric(http(port, "GET", "/metrics")[2].decode(), "torchport_errors_total", code="503") == 1


# --- finding 4: connection limit and read timeouts ----------------------------------------------------------------


def test_idle_and_slow_connections_are_closed_after_the_read_timeouts(exported_digits: Path, tmp_path: Path) -> None:
    """--header-timeout 1 --body-timeout 2: a connection that sends nothing, and one that trickles its headers,
    are closed after about a second; one that stalls in its body gets a JSON 408 and is closed; ordinary
    requests are served meanwhile."""
    body = json_body(np.zeros((1, 1, 8, 8), np.float32))
    log = tmp_path / "server.log"
    options = ("--header-timeout", "1", "--body-timeout", "2", "--no-access-log")
    with running_server(exported_digits / "bundle", log, *options) as port:
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        trickle = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow_body = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            slow_body.sendall(request_head(port, len(body)) + body[:10])
            trickle.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
            start = time.monotonic()
            for index in range(12):  # one header line every 0.25 s: never a whole head
                time.sleep(0.25)
                try:
                    trickle.sendall(f"X-Slow-{index}: 1\r\n".encode())
                except OSError:
                    break
            assert http(port, "POST", INFER, body)[0] == 200
            assert closed_within(idle, 4) is not None, "an idle connection was not closed"
            assert closed_within(trickle, 4) is not None, "a connection trickling its headers was not closed"
            assert time.monotonic() - start < 6

            status, headers, answer = read_response(slow_body, timeout=6)
            assert status == 408, (status, answer[:300])
            assert headers["connection"] == "close"
            assert "body" in json.loads(answer)["error"]
            assert closed_within(slow_body, 3) is not None, "a connection with a stalled body was not closed"
        finally:
            for sock in (idle, trickle, slow_body):
                sock.close()
        assert http(port, "GET", "/v2/health/ready")[0] == 200


def test_connections_over_the_limit_get_503_with_retry_after(exported_digits: Path, tmp_path: Path) -> None:
    """--limit-concurrency 3: with three connections open, a fourth is answered a JSON 503 with Retry-After and
    closed; once the idle ones are closed by the header timeout, requests are served again."""
    log = tmp_path / "server.log"
    options = ("--limit-concurrency", "3", "--header-timeout", "2", "--no-access-log")
    with running_server(exported_digits / "bundle", log, *options) as port:
        time.sleep(0.3)  # the readiness probe's connection is gone
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                extra.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                status, headers, answer = read_response(extra, timeout=5)
                assert status == 503, (status, answer[:300])
                assert int(headers["retry-after"]) >= 1, headers
                assert "connections" in json.loads(answer)["error"], answer
                assert closed_within(extra, 3) is not None
            for sock in held:
                assert closed_within(sock, 5) is not None, "an idle connection was not closed"
        finally:
            for sock in held:
                sock.close()
        assert http(port, "GET", "/v2/health/live")[0] == 200


# --- finding 5: shutdown with an upload still arriving ------------------------------------------------------------


def test_sigterm_during_a_slow_upload_gives_no_500_and_no_traceback(exported_digits: Path, tmp_path: Path) -> None:
    """--graceful-timeout 1: a request whose body is still arriving when the drain deadline passes is closed
    cleanly (a JSON 503 with Retry-After, or a plain close) — never uvicorn's 500 — and the log holds no
    traceback; the process exits 0."""
    body = json_body(np.zeros((2, 1, 8, 8), np.float32))
    log = tmp_path / "server.log"
    options = ("--graceful-timeout", "1", "--body-timeout", "60")
    with server_process([exported_digits / "bundle"], log, *options) as (process, port):
        upload = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            upload.sendall(request_head(port, len(body)) + body[: len(body) // 2])
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            status, headers, answer = read_response(upload, timeout=10)
        finally:
            upload.close()
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit after SIGTERM: {log.read_text()[-2000:]}")
    text = log.read_text()
    assert status in (0, 503), (status, answer[:300], text[-2000:])
    if status == 503:
        assert int(headers["retry-after"]) >= 1 and json.loads(answer)["error"]
    assert "Traceback" not in text and "CancelledError" not in text, text[-3000:]
    assert "Exception in ASGI application" not in text, text[-3000:]
    assert code == 0, text[-2000:]


# --- finding 9: a model that fails in ONNX Runtime is the server's fault -----------------------------------------


def failing_bundle(exported_digits: Path, target: Path) -> Path:
    """The digits bundle with its model.onnx swapped for one of the same inputs and outputs whose ONNX Runtime run
    fails on valid input: the image's largest pixel (as an integer) indexes a table of 4 rows, so an image of
    zeros runs and one with a pixel of 4 or more fails inside ORT (Gather: index out of bounds)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(4, 10), "table")
    axes = numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Cast", ["input"], ["as_int"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["as_int", "axes"], ["largest"], keepdims=0),
        helper.make_node("Gather", ["table", "largest"], ["logits"], axis=0),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "fails_in_ort",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
        ],
        initializer=[table, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    bundle = target / "bundle"
    shutil.copytree(exported_digits / "bundle", bundle)
    onnx.save(model, bundle / "model.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] == "model.onnx"]
    from torchport.bundle.manifest import sha256_file

    manifest["artifacts"][0].update(
        sha256=sha256_file(bundle / "model.onnx"), bytes=(bundle / "model.onnx").stat().st_size
    )
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return bundle


def test_an_onnx_runtime_failure_is_a_json_500_counted_in_metrics(exported_digits: Path, tmp_path: Path) -> None:
    bundle = failing_bundle(exported_digits, tmp_path)
    log = tmp_path / "server.log"
    with running_server(bundle, log, "--no-variants") as port:
        status, _, answer = http(port, "POST", INFER, json_body(np.zeros((1, 1, 8, 8), np.float32)))
        assert status == 200, answer[:300]
        failing = np.zeros((2, 1, 8, 8), np.float32)
        failing[1, 0, 3, 3] = 16.0  # valid input (FP32, the declared shape, finite) that ORT cannot run
        status, headers, answer = http(port, "POST", INFER, json_body(failing))
        assert status == 500, (status, answer[:300])
        assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/json"
        message = json.loads(answer)["error"]
        assert "digits" in message and "\n" not in message and "Traceback" not in message, message
        assert http(port, "POST", INFER, json_body(np.zeros((3, 1, 8, 8), np.float32)))[0] == 200
        metrics = http(port, "GET", "/metrics")[2].decode()
        assert metric(metrics, "torchport_errors_total", code="500") == 1
        assert metric(metrics, "torchport_inference_failures_total", model="digits:1") == 1
