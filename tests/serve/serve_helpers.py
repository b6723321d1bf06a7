"""Helpers: a real ``python -m torchport.serve`` process on 127.0.0.1 and a free port, always stopped afterwards;
the local ONNX Runtime reference answers and the digit batches the tests send."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from torchport.serve.local import local_server
from torchport.sessions import onnxruntime_session

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
    with local_server(bundles, log, *extra, env=env, via_cli=via_cli) as (process, port):
        yield process, port


@contextmanager
def running_server(
    bundle: Path, log: Path, *extra: str, env: dict[str, str] | None = None, via_cli: bool = False
) -> Iterator[int]:
    """The port of a ready server on one bundle."""
    with server_process([bundle], log, *extra, env=env, via_cli=via_cli) as (_, port):
        yield port


def error_of(body: bytes) -> Any:
    return json.loads(body)["error"]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the Prometheus samples ``name`` whose labels include ``labels`` (0 when there is none): a test
    names the labels it cares about, whatever others the series carry and in whatever order they are written."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total
