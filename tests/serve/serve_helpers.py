"""Helpers: a real ``python -m torchport.serve`` process on 127.0.0.1 and a free port, always stopped afterwards;
the local ONNX Runtime reference answers and the digit batches the tests send."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from torchport.verify.runners import onnxruntime_session

BODY_LIMIT = 256 * 1024


@cache
def _reference_session(model: Path) -> Any:
    return onnxruntime_session(model, 1)


def ort_outputs(model: Path, array: np.ndarray) -> dict[str, np.ndarray]:
    """What a plain local ONNX Runtime session on the ONNX file ``model`` answers (one session per file)."""
    logits, probabilities = _reference_session(model).run(["logits", "probabilities"], {"input": array})
    return {"logits": logits, "probabilities": probabilities}


def digits(batch: int, seed: int = 0) -> np.ndarray:
    """A batch of random 8x8 digit images, as the digits bundle takes them."""
    return np.random.default_rng(seed).uniform(0, 16, (batch, 1, 8, 8)).astype(np.float32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@contextmanager
def server_process(
    bundles: list[Path], log: Path, *extra: str, env: dict[str, str] | None = None, via_cli: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A ready server on ``bundles`` and its process; stopped (killed if it will not stop) afterwards.

    ``via_cli``: start it as ``torchport serve`` (the user's command) instead of ``python -m torchport.serve``.
    """
    port = free_port()
    entry = ["torchport.cli", "serve"] if via_cli else ["torchport.serve"]
    command = [sys.executable, "-m", *entry, *map(str, bundles), "--port", str(port), "--threads", "1", *extra]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
                with suppress(OSError):
                    if http(port, "GET", "/v2/health/ready")[0] == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after 60 s: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield process, port
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)


@contextmanager
def running_server(
    bundle: Path, log: Path, *extra: str, env: dict[str, str] | None = None, via_cli: bool = False
) -> Iterator[int]:
    """The port of a ready server on one bundle."""
    with server_process([bundle], log, *extra, env=env, via_cli=via_cli) as (_, port):
        yield port


def error_of(body: bytes) -> Any:
    return json.loads(body)["error"]
