"""uvicorn's ``Server`` as ``torchport serve`` runs it: a SIGTERM ends in exit 0 after draining, the gRPC server (if
any) starts before REST and drains beside it, and the addresses both listen on are logged."""

from __future__ import annotations

import logging
import signal
import socket
from types import FrameType

import uvicorn

from torchport.errors import UsageError
from torchport.serve.grpc_server import GrpcServer

log = logging.getLogger("torchport.serve")


class Server(uvicorn.Server):
    """uvicorn re-raises a SIGTERM it caught once its shutdown is over, so the process would die of the signal
    (exit -15). SIGTERM is how a service manager or Kubernetes asks a server to stop, so it exits 0 instead, after
    draining (or after ``graceful_timeout_s``, when requests still running are cut off); SIGINT still ends in 130.
    Relies on uvicorn's private ``_captured_signals`` list; without it uvicorn's own behaviour stands
    (tests/serve/test_serve_ops.py checks the exit code)."""

    def __init__(self, config: uvicorn.Config, grpc: GrpcServer | None = None) -> None:
        super().__init__(config)
        self.grpc = grpc

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list) and sig == signal.SIGTERM:
            captured.remove(sig)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc is not None:  # first: a gRPC port that cannot be bound stops the server before REST serves
            await self.grpc.start()
        try:
            await super().startup(sockets)
        except SystemExit:  # uvicorn exits 1 ("a check failed") when it cannot bind; a busy port is a usage error
            config = self.config
            raise UsageError(f"--port {config.port}: cannot listen on {config.host}:{config.port} (in use?)") from None
        for server in self.servers:
            for listening in server.sockets:
                host, port = listening.getsockname()[:2]
                log.info("REST: listening on http://%s", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc is not None:  # gRPC drains beside REST; the app's shutdown awaits it before the batchers stop
            self.grpc.begin_stop()
        await super().shutdown(sockets)
