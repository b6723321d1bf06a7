"""``python -m torchport.serve BUNDLE [BUNDLE ...] [--host H] [--port P] ...`` (the same as ``torchport serve``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchport.errors import TorchportError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``torchport serve``; shared with the CLI verb."""
    parser.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle directories (RUN_DIR/bundle)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="samples per merged ORT call (default 64)")
    parser.add_argument(
        "--max-batch-delay-ms", type=float, default=2.0, help="longest wait for batch-mates (default 2 ms)"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=1024,
        help="requests per model waiting beyond its next batch (or being read) before 503 (default 1024)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="body limit (413 above)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per model (default min(4, CPUs))")
    parser.add_argument("--api-key", help="require this key on infer and metadata (default $TORCHPORT_API_KEY)")
    parser.add_argument("--no-variants", action="store_true", help="serve only model.onnx, not int8/fp16/... variants")
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=2048,
        help="open connections at most; the next are answered 503 with Retry-After and closed (default 2048)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds for a request's head to arrive, and the longest idle time of a connection (default 10)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds for a request's body to arrive (408 after; default 30)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds to finish requests in flight before the rest are answered 503 (default 30)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--no-access-log", action="store_true", help="do not log one JSON line per request")


def run(args: argparse.Namespace) -> int:
    from torchport.serve import serve

    serve(
        [Path(b) for b in args.bundles],
        args.host,
        args.port,
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
