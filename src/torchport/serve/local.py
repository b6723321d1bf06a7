"""A `torchport serve` process on 127.0.0.1 and a free port, ready before it is handed out and always stopped
afterwards: what ``torchport conformance --server local`` runs its v2 clients against (and the tests use)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from torchport.errors import TorchportError

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# no proxy for 127.0.0.1, whatever HTTP_PROXY says
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _ready(port: int) -> bool:
    with suppress(OSError), _DIRECT.open(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as reply:
        return bool(reply.status == 200)
    return False


@contextmanager
def local_server(
    bundles: list[Path], log: Path, *extra: str, env: dict[str, str] | None = None, via_cli: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The process and port of a ready server on ``bundles`` (output in ``log``); SIGTERM, then SIGKILL, after.

    ``via_cli``: start it as ``torchport serve`` (the user's command) instead of ``python -m torchport.serve``.
    """
    port = free_port()
    entry = ["torchport.cli", "serve"] if via_cli else ["torchport.serve"]
    command = [sys.executable, "-m", *entry, *map(str, bundles), "--port", str(port), "--threads", "1", *extra]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not (_ready(port) and process.poll() is None):  # our server answering, not another's
                if process.poll() is not None:
                    raise TorchportError(f"the server exited with {process.returncode}: {_tail(log)}")
                if time.monotonic() > deadline:
                    raise TorchportError(f"the server was not ready after {READY_TIMEOUT_S:.0f} s: {_tail(log)}")
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


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
