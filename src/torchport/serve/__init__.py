"""``torchport serve``: any bundle as an Open Inference Protocol v2 (KServe/Triton REST) server.

``serve([bundle, ...], host, port)`` loads every bundle's ONNX artifacts, then runs the ASGI app on uvicorn until
SIGINT/SIGTERM; shutdown stops accepting connections, finishes in-flight requests, then drains the batchers.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

__all__ = ["API_KEY_ENV", "serve"]  # the app lives in torchport.serve.app; imported lazily to keep the CLI fast

API_KEY_ENV = "TORCHPORT_API_KEY"


def _configure_logging(level: str, access_log: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name, enabled in (("torchport.serve", True), ("torchport.serve.access", access_log)):
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name == "torchport.serve" else []
        logger.setLevel(getattr(logging, level.upper(), logging.INFO) if enabled else logging.WARNING)


def serve(
    bundles: list[Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_batch_size: int = 64,
    max_batch_delay_ms: float = 2.0,
    max_queue: int = 1024,
    max_body_bytes: int = 16 * 1024 * 1024,
    threads: int | None = None,
    api_key: str | None = None,
    variants: bool = True,
    log_level: str = "info",
    access_log: bool = True,
    graceful_timeout_s: float = 30.0,
) -> None:
    """Serve ``bundles`` on ``host:port`` until interrupted. ``api_key`` defaults to $TORCHPORT_API_KEY."""
    import uvicorn

    from torchport.serve.app import Settings, create_app
    from torchport.serve.models import load_repository

    _configure_logging(log_level, access_log)
    repository = load_repository([Path(b) for b in bundles], threads=threads, variants=variants)
    settings = Settings(
        max_batch_size=max_batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        api_key=api_key or os.environ.get(API_KEY_ENV) or None,
    )
    app = create_app(repository, settings)

    class Server(uvicorn.Server):
        """uvicorn re-raises a SIGTERM it caught once its shutdown is over, so the process would die of the signal
        (exit -15). SIGTERM is how a service manager or Kubernetes asks a server to stop, so it exits 0 instead,
        after draining (or after ``graceful_timeout_s``, when requests still running are cut off); SIGINT still
        ends in 130. Relies on uvicorn's private ``_captured_signals`` list; without it uvicorn's own behaviour
        stands (tests/serve/test_serve_ops.py checks the exit code)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list) and sig == signal.SIGTERM:
                captured.remove(sig)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning" if log_level.lower() != "debug" else "debug",
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=int(graceful_timeout_s),
    )
    Server(config).run()
