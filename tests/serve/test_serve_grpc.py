"""v2 over gRPC beside REST: a real ``torchport serve --grpc-port`` process spoken to by tritonclient.grpc (Triton's
own client): health, metadata, infer equal to local ONNX Runtime (raw and typed contents), the caller's faults as
INVALID_ARGUMENT with REST's message, NOT_FOUND, UNAUTHENTICATED, overload UNAVAILABLE, metrics by model and
protocol, a graceful stop under load, and a gRPC port that cannot be bound."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from serve_helpers import digits, error_of, http, metric, ort_outputs, server_process

from torchport.serve.local import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

KEY = "grpc-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@contextmanager
def grpc_server(bundle: Path, log: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """A ready ``torchport serve BUNDLE --grpc-port P`` process: (process, REST port, gRPC port)."""
    grpc_port = free_port()
    with server_process([bundle], log, "--grpc-port", str(grpc_port), *extra, via_cli=True) as (process, port):
        yield process, port, grpc_port


class Served(NamedTuple):
    rest: int  # port
    grpc: int  # port
    log: Path  # the server's output


@pytest.fixture(scope="module")
def served(exported_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server with an API key, shared by the module's tests."""
    log = tmp_path_factory.mktemp("grpc") / "server.log"
    with grpc_server(exported_digits / "bundle", log, "--api-key", KEY, "--max-batch-delay-ms", "5") as (_, rest, port):
        yield Served(rest, port, log)


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[Any]:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{served.grpc}")
    yield client
    client.close()


def infer_input(array: np.ndarray, name: str = "input", datatype: str = "FP32") -> Any:
    import tritonclient.grpc as triton

    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def refused(call: Callable[[], Any]) -> tuple[str, str]:
    """(gRPC status, message) of a call that must fail."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status()), str(caught.value.message())


def test_health_and_metadata_through_tritonclient_grpc(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()  # health needs no key, as over REST
    assert client.is_model_ready("digits", headers=AUTH) and client.is_model_ready("digits", "1", headers=AUTH)
    assert not client.is_model_ready("nope", headers=AUTH)  # not served: not ready, as Triton answers
    assert "binary_tensor_data" in client.get_server_metadata(headers=AUTH).extensions
    metadata = client.get_model_metadata("digits", headers=AUTH, as_json=True)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "1", "8", "8"]}]
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "probabilities"]
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]


@pytest.mark.parametrize("batch", [1, 5])
def test_infer_with_raw_contents_equals_local_onnxruntime(client: Any, exported_digits: Path, batch: int) -> None:
    import tritonclient.grpc as triton

    array = digits(batch, seed=40 + batch)
    result = client.infer("digits", [infer_input(array)], request_id="r-7", headers=AUTH)
    expected = ort_outputs(exported_digits / "bundle" / "model.onnx", array)
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, rtol=0, atol=1e-5, err_msg=name)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("r-7", "digits", "1")
    only = client.infer(
        "digits", [infer_input(array)], outputs=[triton.InferRequestedOutput("probabilities")], headers=AUTH
    )
    assert [o.name for o in only.get_response().outputs] == ["probabilities"]
    np.testing.assert_allclose(only.as_numpy("probabilities"), expected["probabilities"], rtol=0, atol=1e-5)


def test_infer_with_typed_fp32_contents_equals_local_onnxruntime(served: Served, exported_digits: Path) -> None:
    """tritonclient always sends raw bytes; a client of the spec may send the values in fp32_contents instead."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    array = digits(3, seed=9)
    request = service_pb2.ModelInferRequest(model_name="digits", model_version="1")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(array.shape))
    tensor.contents.fp32_contents.extend(array.ravel().tolist())
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=[("x-api-key", KEY)], timeout=30)
    expected = ort_outputs(exported_digits / "bundle" / "model.onnx", array)
    for index, output in enumerate(response.outputs):
        got = np.frombuffer(response.raw_output_contents[index], dtype="<f4").reshape(output.shape)
        np.testing.assert_allclose(got, expected[output.name], rtol=0, atol=1e-5, err_msg=output.name)


@pytest.mark.parametrize(
    ("name", "datatype", "shape"),
    [
        ("input", "INT64", (2, 1, 8, 8)),
        ("input", "FP32", (2, 1, 8)),
        ("input", "FP32", (2, 1, 8, 9)),
        ("nope", "FP32", (2, 1, 8, 8)),
    ],
    ids=["wrong datatype", "wrong rank", "wrong dimension", "unknown input"],
)
def test_malformed_requests_are_invalid_argument_with_rests_message(
    client: Any, served: Served, name: str, datatype: str, shape: tuple[int, ...]
) -> None:
    array = np.ones(shape, dtype=np.int64 if datatype == "INT64" else np.float32)
    status, message = refused(lambda: client.infer("digits", [infer_input(array, name, datatype)], headers=AUTH))
    assert status == "StatusCode.INVALID_ARGUMENT" and "\n" not in message
    tensor = {"name": name, "datatype": datatype, "shape": list(shape), "data": array.ravel().tolist()}
    body = json.dumps({"inputs": [tensor]}).encode()
    rest_status, _, rest_body = http(served.rest, "POST", "/v2/models/digits/infer", body, {"x-api-key": KEY})
    assert rest_status == 400 and message == error_of(rest_body)


def test_unknown_model_or_version_is_not_found_and_a_missing_key_unauthenticated(client: Any) -> None:
    array = digits(1)
    status, message = refused(lambda: client.infer("nope", [infer_input(array)], headers=AUTH))
    assert status == "StatusCode.NOT_FOUND" and "unknown model 'nope'" in message and "digits" in message
    status, message = refused(lambda: client.infer("digits", [infer_input(array)], model_version="9", headers=AUTH))
    assert status == "StatusCode.NOT_FOUND" and "no version '9'" in message
    status, _ = refused(lambda: client.get_model_metadata("nope", headers=AUTH))
    assert status == "StatusCode.NOT_FOUND"
    for call in (
        lambda: client.infer("digits", [infer_input(array)]),
        lambda: client.get_model_metadata("digits", headers={"authorization": "Bearer wrong"}),
        lambda: client.get_server_metadata(),
    ):
        status, message = refused(call)
        assert status == "StatusCode.UNAUTHENTICATED" and "API key" in message


def test_metrics_count_grpc_and_rest_requests_by_model(client: Any, served: Served) -> None:
    rest = served.rest
    before = http(rest, "GET", "/metrics")[2].decode()
    for seed in range(3):
        client.infer("digits", [infer_input(digits(1, seed=seed))], headers=AUTH)
    refused(lambda: client.infer("digits", [infer_input(np.ones((1, 1, 8), np.float32))], headers=AUTH))
    body = f'{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": {[0.0] * 64}}}]}}'
    assert http(rest, "POST", "/v2/models/digits/infer", body.encode(), {"x-api-key": KEY})[0] == 200
    after = http(rest, "GET", "/metrics")[2].decode()

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("torchport_requests_total", protocol="grpc", endpoint="infer", model="digits:1") == 4
    assert grew("torchport_errors_total", protocol="grpc", code="INVALID_ARGUMENT", model="digits:1") == 1
    assert grew("torchport_request_duration_seconds_count", protocol="grpc", endpoint="infer", model="digits:1") == 4
    assert grew("torchport_requests_total", protocol="rest", endpoint="infer", model="digits:1") == 1
    assert grew("torchport_request_duration_seconds_count", protocol="rest", model="digits:1") == 1
    assert metric(after, "torchport_batch_size_count", model="digits:1") >= 4  # one batcher for both protocols
    access = [json.loads(line) for line in served.log.read_text().splitlines() if '"method":"gRPC"' in line]
    assert {"path": "infer", "model": "digits:1", "status": "INVALID_ARGUMENT"}.items() <= access[-1].items()


# --- servers of their own -------------------------------------------------------------------------------------


def test_overload_is_unavailable_and_the_server_keeps_serving(exported_digits: Path, tmp_path: Path) -> None:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    model = exported_digits / "bundle" / "model.onnx"
    arrays = [digits(4096, seed=500 + i) for i in range(10)]
    with grpc_server(exported_digits / "bundle", tmp_path / "log", "--max-queue", "1", "--no-access-log") as (
        _,
        rest,
        port,
    ):
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")

        def call(index: int) -> tuple[str, str]:
            try:
                result = client.infer("digits", [infer_input(arrays[index])])
            except InferenceServerException as exc:
                return str(exc.status()), str(exc.message())
            np.testing.assert_allclose(
                result.as_numpy("logits"), ort_outputs(model, arrays[index])["logits"], atol=1e-5
            )
            return "OK", ""

        outcomes: list[tuple[str, str]] = []
        for _ in range(3):  # a flood rarely fails to overflow a queue of one; try again if it did
            with ThreadPoolExecutor(len(arrays)) as pool:
                outcomes += pool.map(call, range(len(arrays)))
            if any(status != "OK" for status, _ in outcomes):
                break
        statuses = [status for status, _ in outcomes]
        assert set(statuses) <= {"OK", "StatusCode.UNAVAILABLE"}, outcomes
        assert statuses.count("StatusCode.UNAVAILABLE") >= 1 and statuses.count("OK") >= 2, statuses
        message = next(m for s, m in outcomes if s != "OK")
        assert "queue" in message and "digits" in message
        assert client.is_server_ready()
        small = digits(2, seed=1)
        np.testing.assert_allclose(
            client.infer("digits", [infer_input(small)]).as_numpy("logits"),
            ort_outputs(model, small)["logits"],
            atol=1e-5,
        )
        metrics = http(rest, "GET", "/metrics")[2].decode()
        unavailable = metric(metrics, "torchport_errors_total", protocol="grpc", code="UNAVAILABLE", model="digits:1")
        assert unavailable == statuses.count("StatusCode.UNAVAILABLE")
        client.close()


def test_sigterm_under_grpc_load_drains_and_exits_zero(exported_digits: Path, tmp_path: Path) -> None:
    """Every call made while the server stops is answered OK (equal to ONNX Runtime) or UNAVAILABLE, never
    INTERNAL or a wrong answer, and the process exits 0 with both ports closed. A call can also be CANCELLED by
    gRPC's core itself when it arrives as the server stops, before any server code sees it (what every gRPC server
    does with a call racing its stop; the client may retry it): the server's log shows that no call that reached
    torchport was cut off."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    model = exported_digits / "bundle" / "model.onnx"
    array = digits(8, seed=3)
    expected = ort_outputs(model, array)["logits"]
    outcomes: list[str] = []
    with grpc_server(exported_digits / "bundle", tmp_path / "log", "--no-access-log") as (process, rest, port):
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
        started = threading.Event()

        def load() -> None:
            while process.poll() is None and len(outcomes) < 100_000:
                try:
                    result = client.infer("digits", [infer_input(array)], client_timeout=30)
                    np.testing.assert_allclose(result.as_numpy("logits"), expected, atol=1e-5)
                    outcomes.append("OK")
                except InferenceServerException as exc:
                    outcomes.append(str(exc.status()))
                    if outcomes[-1] not in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"):
                        return
                started.set()

        with ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(load) for _ in range(4)]
            assert started.wait(60)
            process.terminate()
            assert process.wait(timeout=60) == 0
            for worker in workers:
                worker.result(timeout=60)
        client.close()
    assert "OK" in outcomes, outcomes[-5:]
    assert set(outcomes) <= {"OK", "StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}, sorted(set(outcomes))
    assert "cancelled before its answer" not in (tmp_path / "log").read_text()
    for closed in (rest, port):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", closed), timeout=2):
            pass


def test_a_grpc_port_in_use_is_one_line_and_exit_2(exported_digits: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "torchport.cli", "serve", str(exported_digits / "bundle")]
        command += ["--port", str(free_port()), "--grpc-port", str(port), "--threads", "1"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"--grpc-port {port}" in done.stderr and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--grpc-port", "-5"], "error: --grpc-port must be a TCP port, 1 to 65535, or 0 for none (got -5)"),
        (["--port", "18999", "--grpc-port", "18999"], "error: --grpc-port must differ from --port (both are 18999)"),
    ],
)
def test_a_bad_grpc_port_is_refused_before_anything_loads(options: list[str], message: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torchport.cli", "serve", str(tmp_path / "no-bundle"), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr.strip()) == (2, message)
