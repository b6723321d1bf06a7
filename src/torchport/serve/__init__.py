"""``torchport serve``: any bundle as an Open Inference Protocol v2 (KServe/Triton) server, over REST and, with
``grpc_port``, over gRPC too, in one process and one event loop (:mod:`torchport.serve.grpc_server`).

``serve([bundle, ...], settings)`` loads every bundle's ONNX artifacts, then runs the ASGI app on uvicorn until
SIGINT/SIGTERM; shutdown stops accepting connections, finishes in-flight requests, then drains the batchers. A
request still running (or still uploading) after ``graceful_timeout_s`` is answered 503 and its connection closed.
At most ``limit_concurrency`` connections are open at once (the next are answered 503); a request's head must
arrive within ``header_timeout_s``, its body within ``body_timeout_s`` (see :mod:`torchport.serve.connections`).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from torchport.serve.settings import API_KEY_ENV, DEFAULTS, RETRY_AFTER_S, ServeSettings

if TYPE_CHECKING:
    import uvicorn

    from torchport.serve.grpc_server import GrpcServer
    from torchport.serve.models import Repository
    from torchport.serve.state import ServerState

__all__ = ["serve"]  # the app lives in torchport.serve.app; imported lazily to keep the CLI fast


def _configure_logging(level: str, access_log: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name, enabled in (("torchport.serve", True), ("torchport.serve.access", access_log)):
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name == "torchport.serve" else []
        logger.setLevel(getattr(logging, level.upper(), logging.INFO) if enabled else logging.WARNING)


def _raise_file_limit(connections: int) -> None:
    """Each connection is a file descriptor: raise the soft RLIMIT_NOFILE towards the hard one so that
    ``connections`` fit (as Go's runtime does), and say so once if they cannot."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    needed = connections + 256  # model files, the listening socket, logs, ORT's threads
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
        if soft < needed:
            logging.getLogger("torchport.serve").warning(
                "the open-file limit (%d) is below --limit-concurrency %d: connections past it fail at accept",
                soft,
                connections,
            )


def serve(bundles: list[Path], settings: ServeSettings = DEFAULTS) -> None:
    """Serve ``bundles`` until interrupted. ``settings.api_key`` defaults to $TORCHPORT_API_KEY."""
    from torchport.serve.models import load_repository

    settings.check()
    settings = replace(settings, api_key=settings.api_key or os.environ.get(API_KEY_ENV) or None)
    _configure_logging(settings.log_level, settings.access_log)
    _raise_file_limit(settings.limit_concurrency)
    repository = load_repository([Path(b) for b in bundles], threads=settings.threads, variants=settings.variants)
    _server(repository, settings).run()


def _server(repository: Repository, settings: ServeSettings) -> uvicorn.Server:
    """uvicorn running the app on ``repository``, behind the connection guards of ``settings``."""
    import uvicorn

    from torchport.serve.app import create_app
    from torchport.serve.connections import Limits, guarded_protocol
    from torchport.serve.server import Server

    app = create_app(repository, settings)
    limits = Limits(settings.limit_concurrency, settings.header_timeout_s, settings.body_timeout_s, RETRY_AFTER_S)
    protocol = guarded_protocol(limits, on_refused=app.metrics.connections_refused.inc)
    grpc = _grpc_server(app.state) if settings.grpc_port else None

    config = uvicorn.Config(
        app,
        http=protocol,
        host=settings.host,
        port=settings.port,
        log_level="warning" if settings.log_level.lower() != "debug" else "debug",
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=max(1, round(settings.graceful_timeout_s)),
    )
    return Server(config, grpc)


def _grpc_server(state: ServerState) -> GrpcServer:
    from torchport.serve.grpc_server import GrpcServer

    server = GrpcServer(state)
    state.drains.append(server.wait_stopped)
    return server
