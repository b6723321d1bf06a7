"""Latency of an artifact in ONNX Runtime on the CPU: median and p99 of ``session.run`` per batch and threads.

Each (threads) setting gets its own session, because ONNX Runtime fixes the intra-op pool when the session is
made. The first few runs are not timed: they allocate buffers and pick kernels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from torchport.bundle.manifest import Latency
from torchport.sessions import onnxruntime_session

BATCHES = (1, 64)
THREADS = (1, 2)
WARMUP = 3


def time_calls(call: Callable[[], object], iterations: int, warmup: int = WARMUP) -> tuple[float, float]:
    """(median, p99) wall time of ``call`` in milliseconds over ``iterations`` timed calls after ``warmup``."""
    for _ in range(warmup):
        call()
    times = np.empty(iterations)
    for i in range(iterations):
        started = time.perf_counter()
        call()
        times[i] = time.perf_counter() - started
    return float(np.median(times) * 1e3), float(np.percentile(times, 99) * 1e3)


def measure_latency(
    path: Path,
    inputs: dict[int, np.ndarray],
    threads: Sequence[int] = THREADS,
    iterations: int = 30,
    warmup: int = WARMUP,
) -> list[Latency]:
    """One ``Latency`` per (threads, batch); ``inputs`` maps each batch size to an input of that batch."""
    results = []
    for count in threads:
        session = onnxruntime_session(path, threads=count)
        name = session.get_inputs()[0].name
        for batch, array in inputs.items():
            feed = {name: array}
            median, p99 = time_calls(partial(session.run, None, feed), iterations, warmup)
            results.append(
                Latency(
                    batch=batch,
                    threads=count,
                    median_ms=round(median, 4),
                    p99_ms=round(p99, 4),
                    iterations=iterations,
                )
            )
    return results
