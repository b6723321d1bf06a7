"""A `torchport serve` started in the background from Python, for a notebook or a test: ``tp.serve(...,
background=True)``.

The server runs in its own process, exactly as ``torchport serve`` runs it (the same ``serve()`` with the same
settings, so every protocol and limit is there), on 127.0.0.1 or the host asked for. The handle is ready when it
is returned (``/v2/health/ready`` answered 200) and stops the process on ``stop()`` or at the end of a ``with``
block: SIGTERM, which drains requests in flight, then SIGKILL if it will not go.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from torchport.errors import TorchportError
from torchport.serve.local import free_port
from torchport.serve.settings import API_KEY_ENV, ServeSettings

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# no proxy for the server we just started, whatever HTTP_PROXY says
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RunningServer:
    """A server process started by :func:`start_server`; ``url`` is where it answers."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, log: _LogTail) -> None:
        self.process = process
        self.host = host
        self.port = port
        self._log = log

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Stop the server (SIGTERM: it finishes requests in flight; SIGKILL after ``timeout_s``); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.join()
        return int(self.process.returncode)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def last_line(self) -> str:
        """The server's last line of output (its error, when it ended on one)."""
        return self._log.last()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return f"<RunningServer {self.url} pid {self.process.pid} {state}>"


class _LogTail:
    """Reads the server's output as it comes (a pipe nobody reads would stall the server once full), keeps its
    last lines for an error message, and echoes them to stderr when asked."""

    def __init__(self, stream: IO[bytes], echo: bool) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self._thread = threading.Thread(target=self._read, args=(stream, echo), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes], echo: bool) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if echo:
                print(line, file=sys.stderr, flush=True)

    def last(self) -> str:
        lines = [line for line in self.lines if line.strip()]
        return lines[-1] if lines else "no output"

    def join(self) -> None:
        self._thread.join(timeout=5)


def start_server(bundles: list[Path], settings: ServeSettings, echo: bool = False) -> RunningServer:
    """A ready server on ``bundles`` in a child process (``settings.port`` 0: a free port). The bundles are checked
    here first, so a broken one is this process's one-line BundleError; a server that exits, or is not ready within
    ``READY_TIMEOUT_S``, is a TorchportError with its last line."""
    from torchport.bundle.graph import check_graph
    from torchport.bundle.manifest import read_bundle

    settings.check()
    for path in bundles:
        check_graph(read_bundle(path))
    if settings.port == 0:
        settings = dataclasses.replace(settings, port=free_port())
    # the API key travels in the environment, not on the command line, where `ps` would show it to every user
    fields = json.dumps({**dataclasses.asdict(settings), "api_key": None})
    env = {**os.environ, API_KEY_ENV: settings.api_key} if settings.api_key else None
    command = [sys.executable, "-m", "torchport.serving", fields, *(str(path.resolve()) for path in bundles)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert process.stdout is not None  # stdout=PIPE
    server = RunningServer(process, settings.host, settings.port, _LogTail(process.stdout, echo))
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError), _DIRECT.open(f"{url}/v2/health/ready", timeout=2) as reply:
        return bool(reply.status == 200)
    return False


def _wait_ready(server: RunningServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (_answers(server.url) and server.running):  # our server answering, not another's on the port
        if not server.running:
            raise TorchportError(f"the server exited with {server.process.returncode}: {server.last_line()}")
        if time.monotonic() > deadline:
            raise TorchportError(f"the server was not ready after {READY_TIMEOUT_S:.0f} s: {server.last_line()}")
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    """The child: ``python -m torchport.serving SETTINGS_JSON BUNDLE...`` serves as `torchport serve` would."""
    from torchport.serve import serve

    try:
        serve([Path(path) for path in argv[1:]], ServeSettings(**json.loads(argv[0])))
    except TorchportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
