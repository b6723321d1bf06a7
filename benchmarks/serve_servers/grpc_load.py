"""A closed-loop gRPC load generator for the v2 ``ModelInfer`` call: ``wrk`` for gRPC, in Python.

``--concurrency`` calls are kept in flight on one HTTP/2 connection (grpc.aio, one event loop, as ``wrk -t1``
keeps its connections on one thread); each sends the same pre-serialized ``ModelInferRequest`` (``--request``) and
reads the answer as raw bytes, so the client spends no time building or parsing messages. Every answer is counted
by its status code; latencies are kept for the percentiles. Prints one line, ``GRPC_RESULT {json}``, with the
fields ``benchmarks/serve.py`` reads from wrk's ``WRK_RESULT`` line, plus the client's own CPU time.

    python benchmarks/serve_servers/grpc_load.py --target 127.0.0.1:8001 --request body.pb --concurrency 64 \
        --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

SERVICE = "/inference.GRPCInferenceService/"


async def _worker(call: Any, body: bytes, deadline: float, latencies: list[int], codes: dict[str, int]) -> None:
    import grpc

    while time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        try:
            await call(body, timeout=30)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        latencies.append(time.perf_counter_ns() - start)
        codes[code] = codes.get(code, 0) + 1


async def load(
    target: str, body: bytes, concurrency: int, seconds: float, method: str = "ModelInfer"
) -> dict[str, Any]:
    import grpc

    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_unary(SERVICE + method)  # no serializers: bytes in, bytes out
        latencies: list[int] = []
        codes: dict[str, int] = {}
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_worker(call, body, deadline, latencies, codes) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return summary(latencies, codes, elapsed, cpu)


def summary(latencies: list[int], codes: dict[str, int], elapsed: float, cpu: float) -> dict[str, Any]:
    ordered = sorted(latencies)

    def percentile(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] / 1000 if ordered else 0.0

    requests = len(latencies)
    return {
        "requests": requests,
        "duration_us": elapsed * 1e6,
        "p50_us": statistics.median(ordered) / 1000 if ordered else 0.0,
        "p99_us": percentile(0.99),
        "status": requests - codes.get("OK", 0),  # non-OK answers, as wrk's non-2xx
        "codes": codes,
        "client_cpu_us_per_request": cpu / requests * 1e6 if requests else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("--request", type=Path, required=True, help="a serialized ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--method", default="ModelInfer", help="the rpc (ServerLive: the protocol's cost alone)")
    args = parser.parse_args()
    work = load(args.target, args.request.read_bytes(), args.concurrency, args.duration, args.method)
    try:
        import uvloop  # the event loop the server runs on too
    except ImportError:
        result = asyncio.run(work)
    else:
        result = uvloop.run(work)
    print("GRPC_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
