"""The gRPC cells of ``benchmarks/serve.py``: closed-loop load on ``ModelInfer``, from h2load or from Python.

- ``h2load`` (nghttp2's HTTP/2 load generator, a C program like wrk; Debian's ``nghttp2-client``): one HTTP/2
  connection with ``concurrency`` streams, each POSTing the gRPC-framed request (a 5-byte prefix and the
  serialized ``ModelInferRequest``). It reads HTTP statuses only, and gRPC answers every call 200 with its status
  in the trailers, so the caller counts failed calls from the server's metrics instead.
- ``python``: ``grpc_load.py`` (grpc.aio, the same one connection and ``concurrency`` calls in flight); it reads each
  call's status itself, but spends a few hundred µs of CPU per call, which the server then lacks on a small
  machine. Used when h2load is not installed.

Both return the fields of wrk's ``WRK_RESULT`` line that ``benchmarks/serve.py`` reads.
"""

from __future__ import annotations

import json
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def client_name(choice: str) -> str:
    """The load generator ``--grpc-client`` asks for: auto is h2load when it is installed, else python."""
    if choice == "auto":
        return "h2load" if shutil.which("h2load") else "python"
    if choice == "h2load" and shutil.which("h2load") is None:
        raise RuntimeError("h2load is not installed; install it with `apt-get install -y nghttp2-client`")
    return choice


def write_request(model_name: str, input_name: str, image: np.ndarray, path: Path) -> tuple[Path, Path]:
    """The ``ModelInferRequest`` of ``image`` (raw contents), serialized to ``path`` and gRPC-framed beside it."""
    from torchport.serve.grpc_proto import messages

    request = messages().ModelInferRequest(model_name=model_name)
    request.inputs.add(name=input_name, datatype="FP32", shape=list(image.shape))
    request.raw_input_contents.append(np.ascontiguousarray(image, dtype="<f4").tobytes())
    payload = request.SerializeToString()
    path.write_bytes(payload)
    framed = path.with_suffix(".grpc")
    framed.write_bytes(b"\0" + struct.pack(">I", len(payload)) + payload)  # uncompressed, big-endian length
    return path, framed


def infer_logits(port: int, request: Path) -> np.ndarray:
    """One ``ModelInfer`` call with the benchmark's request: the logits the server answers."""
    import grpc

    from torchport.serve.grpc_proto import messages

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        answer = messages().ModelInferResponse.FromString(call(request.read_bytes(), timeout=30))
    index = [output.name for output in answer.outputs].index("logits")
    shape = list(answer.outputs[index].shape)
    return np.frombuffer(answer.raw_output_contents[index], dtype="<f4").reshape(shape)


def h2load(port: int, framed: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    """One closed-loop h2load run: one connection, ``concurrency`` streams, ``seconds`` long."""
    with tempfile.TemporaryDirectory(prefix="h2load-") as folder:
        log = Path(folder) / "requests.tsv"
        command = ["h2load", "-c", "1", "-m", str(concurrency), "-D", str(max(1, round(seconds)))]
        command += ["-d", str(framed), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        command += [f"--log-file={log}", f"http://127.0.0.1:{port}{METHOD}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90, check=False)
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    if done.returncode != 0 or not rows:
        raise RuntimeError(f"h2load failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")
    latencies = sorted(int(row[2]) for row in rows)  # start (µs since epoch), HTTP status, µs to the response
    starts = [int(row[0]) for row in rows]
    ends = [start + latency for start, latency in zip(starts, (int(row[2]) for row in rows), strict=True)]
    return {
        "requests": len(rows),
        "duration_us": max(ends) - min(starts),
        "p50_us": statistics.median(latencies),
        "p99_us": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "status": sum(1 for row in rows if row[1] != "200"),
        "connect": 0,
        "read": 0,
        "write": 0,
        "timeout": 0,
    }


def python_client(port: int, request: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    """One closed-loop run of ``grpc_load.py``, the Python client, in its own process (as wrk and h2load run)."""
    command = [sys.executable, str(HERE / "grpc_load.py"), "--target", f"127.0.0.1:{port}", "--request", str(request)]
    command += ["--concurrency", str(concurrency), "--duration", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("GRPC_RESULT "):
            result = dict(json.loads(line.removeprefix("GRPC_RESULT ")))
            return {**result, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    raise RuntimeError(f"grpc_load.py gave no result (exit {done.returncode}): {done.stderr.strip()[-300:]}")
