"""``python -m torchport.serve BUNDLE [BUNDLE ...] [--host H] [--port P] ...`` (the same as ``torchport serve``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchport.errors import TorchportError
from torchport.serve.settings import DEFAULTS, ServeSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``torchport serve``; shared with the CLI verb. Defaults are :data:`DEFAULTS`'."""
    add = parser.add_argument
    add("bundles", nargs="+", metavar="BUNDLE", help="bundle directories (RUN_DIR/bundle)")
    add("--host", default=DEFAULTS.host, help=f"interface to listen on (default {DEFAULTS.host})")
    add("--port", type=int, default=DEFAULTS.port, help=f"TCP port (default {DEFAULTS.port})")
    add(
        "--grpc-port",
        type=int,
        default=DEFAULTS.grpc_port,
        help="also serve v2 over gRPC (KServe/Triton grpc_predict_v2.proto) on this TCP port (default: off)",
    )
    add(
        "--max-batch-size",
        type=int,
        default=DEFAULTS.max_batch_size,
        help=f"samples per merged ORT call (default {DEFAULTS.max_batch_size})",
    )
    add(
        "--max-batch-delay-ms",
        type=float,
        default=DEFAULTS.max_batch_delay_ms,
        help=f"longest wait for batch-mates (default {DEFAULTS.max_batch_delay_ms:g} ms)",
    )
    add(
        "--max-queue",
        type=int,
        default=DEFAULTS.max_queue,
        help="requests per model waiting beyond its next batch (or being read) before 503 "
        f"(default {DEFAULTS.max_queue})",
    )
    add("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, help="body limit (413 above)")
    add("--threads", type=int, help="ONNX Runtime intra-op threads per model (default min(4, CPUs))")
    add("--api-key", help="require this key on infer and metadata (default $TORCHPORT_API_KEY)")
    add("--no-variants", action="store_true", help="serve only model.onnx, not int8/fp16/... variants")
    _add_connection_arguments(parser)
    add("--log-level", default=DEFAULTS.log_level, choices=["debug", "info", "warning", "error"])
    add("--no-access-log", action="store_true", help="do not log one JSON line per request")


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--limit-concurrency",
        type=int,
        default=DEFAULTS.limit_concurrency,
        help="open connections at most; the next are answered 503 with Retry-After and closed "
        f"(default {DEFAULTS.limit_concurrency})",
    )
    add(
        "--header-timeout",
        type=float,
        default=DEFAULTS.header_timeout_s,
        help="seconds for a request's head to arrive, and the longest idle time of a connection "
        f"(default {DEFAULTS.header_timeout_s:g})",
    )
    add(
        "--body-timeout",
        type=float,
        default=DEFAULTS.body_timeout_s,
        help=f"seconds for a request's body to arrive (408 after; default {DEFAULTS.body_timeout_s:g})",
    )
    add(
        "--graceful-timeout",
        type=float,
        default=DEFAULTS.graceful_timeout_s,
        help="on SIGTERM, seconds to finish requests in flight before the rest are answered 503 "
        f"(default {DEFAULTS.graceful_timeout_s:g})",
    )


def settings_from(args: argparse.Namespace) -> ServeSettings:
    """The settings the parsed options of :func:`add_arguments` ask for."""
    return ServeSettings(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        threads=args.threads,
        api_key=args.api_key,
        variants=not args.no_variants,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        graceful_timeout_s=args.graceful_timeout,
        limit_concurrency=args.limit_concurrency,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
    )


def run(args: argparse.Namespace) -> int:
    from torchport.serve import serve

    serve([Path(b) for b in args.bundles], settings_from(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchport.serve", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TorchportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
