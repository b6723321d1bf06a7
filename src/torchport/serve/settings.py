"""Every setting of a ``torchport serve`` process and its default, in one place.

``serve()``, the argparse options of ``torchport serve`` / ``python -m torchport.serve``, the app and the connection
guards all read :data:`DEFAULTS`, so a default is changed here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchport.errors import UsageError

#: seconds a 503 asks the client to wait before retrying (every 503 carries it)
RETRY_AFTER_S = 1
#: the environment variable ``api_key`` falls back to
API_KEY_ENV = "TORCHPORT_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None  # the v2 gRPC service's port too; None or 0: REST only
    max_batch_size: int = 64  # samples per merged ONNX Runtime call
    max_batch_delay_ms: float = 2.0  # longest wait for batch-mates
    max_queue: int = 1024  # requests per model waiting beyond its next batch (or being read) before 503
    max_body_bytes: int = 16 * 1024 * 1024  # 413 above
    threads: int | None = None  # ONNX Runtime intra-op threads per model; None: min(4, CPUs)
    api_key: str | None = None
    variants: bool = True  # serve the int8/fp16/... variants too, not only model.onnx
    log_level: str = "info"
    access_log: bool = True
    graceful_timeout_s: float = 30.0  # on SIGTERM, to finish requests in flight
    limit_concurrency: int = 2048  # open connections at most
    header_timeout_s: float = 10.0  # for a request's head, and a connection's longest idle time
    body_timeout_s: float = 30.0  # for a request's body (408 after)

    def check(self) -> None:
        """Refuse values that would make the server hang or refuse everything, naming the CLI option."""
        for option, count in [
            ("--limit-concurrency", self.limit_concurrency),
            ("--graceful-timeout", self.graceful_timeout_s),
        ]:
            if count < 1:
                raise UsageError(f"{option} must be at least 1 (got {count})")
        for option, seconds in [("--header-timeout", self.header_timeout_s), ("--body-timeout", self.body_timeout_s)]:
            if seconds <= 0:
                raise UsageError(f"{option} must be a positive number of seconds (got {seconds})")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise UsageError(f"--grpc-port must be a TCP port, 1 to 65535, or 0 for none (got {self.grpc_port})")
        if self.grpc_port and self.grpc_port == self.port:
            raise UsageError(f"--grpc-port must differ from --port (both are {self.port})")


DEFAULTS = ServeSettings()
