"""DynamicBatcher on its own: a real batcher on a real event loop, with a small NumPy function as the model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from torchport.serve.batcher import Arrays, DynamicBatcher, InferenceFailed, Overloaded, RecentPeak

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")


class Doubler:
    """``y = 2 x`` that remembers the batch size of every call; a sample of ``x`` below 0 fails the call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, inputs: Arrays) -> Arrays:
        x = inputs["x"]
        self.calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return {"y": x * 2}


def samples(start: int, batch: int) -> Arrays:
    """``batch`` rows of 3 values that say which request they came from: row i is [start + i] * 3."""
    return {"x": np.repeat(np.arange(start, start + batch, dtype=np.float32)[:, None], 3, axis=1)}


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


async def started(batcher: DynamicBatcher) -> DynamicBatcher:
    batcher.start()
    return batcher


def test_each_request_gets_its_own_results_in_order() -> None:
    model = Doubler()

    async def body() -> list[Arrays]:
        batcher = await started(DynamicBatcher("m", model, max_batch_size=64, max_batch_delay_s=0.05))
        requests = [samples(100 * i, 1 + i % 3) for i in range(12)]
        results = await asyncio.gather(*(batcher.submit(r, len(r["x"])) for r in requests))
        await batcher.stop()
        for request, result in zip(requests, results, strict=True):
            np.testing.assert_array_equal(result["y"], request["x"] * 2)
        return results

    run(body)
    assert len(model.calls) < 12, "concurrent requests were never merged"
    assert sum(model.calls) == sum(1 + i % 3 for i in range(12))


def test_a_batch_waits_for_the_callers_seen_lately_and_a_lone_caller_never_waits() -> None:
    """gRPC calls cannot be seen arriving: a batch waits for as many requests as there were callers in flight
    lately (three here), and a lone caller's request runs at once although the delay is a minute."""
    model = Doubler()

    async def body() -> None:
        batcher = await started(DynamicBatcher("m", model, max_batch_delay_s=60.0))
        for _ in range(3):
            batcher.callers.enter()
        first = asyncio.ensure_future(batcher.submit(samples(0, 1), 1))
        await asyncio.sleep(0.05)  # the worker holds the first request for its batch-mates
        assert not first.done() and model.calls == []
        await asyncio.gather(first, batcher.submit(samples(1, 1), 1), batcher.submit(samples(2, 1), 1))
        for _ in range(3):
            batcher.callers.leave()
        assert model.calls == [3]
        await batcher.stop()

        lone = await started(DynamicBatcher("m", model, max_batch_delay_s=60.0))
        lone.callers.enter()
        result = await asyncio.wait_for(lone.submit(samples(5, 1), 1), 30)
        lone.callers.leave()
        np.testing.assert_array_equal(result["y"], samples(5, 1)["x"] * 2)
        await lone.stop()

    run(body)


def test_the_callers_to_expect_fall_back_to_those_in_flight_once_a_window_passes_without_calls() -> None:
    peak = RecentPeak(window_s=0.01)
    for _ in range(4):
        peak.enter()
    for _ in range(3):
        peak.leave()
    assert (peak.peak, peak.in_flight) == (4, 1)
    time.sleep(0.05)
    assert peak.expected == 1  # a REST-only client later on never waits for gRPC callers long gone
    peak.enter()
    assert peak.expected == peak.peak == 2


def test_a_lone_request_waits_at_most_the_delay_and_only_while_others_are_arriving() -> None:
    delay = 0.3

    async def elapsed(arriving: int) -> float:
        batcher = await started(DynamicBatcher("m", Doubler(), max_batch_delay_s=delay))
        batcher.arriving = arriving  # a request being read that never comes: the batch waits for it, then goes
        start = time.monotonic()
        result = await batcher.submit(samples(1, 1), 1)
        seconds = time.monotonic() - start
        np.testing.assert_array_equal(result["y"], samples(1, 1)["x"] * 2)
        await batcher.stop()
        return seconds

    assert delay - 0.01 <= run(lambda: elapsed(arriving=1)) < delay + 5
    assert run(lambda: elapsed(arriving=0)) < delay / 2  # nobody else coming: no wait


def test_a_batch_never_exceeds_max_batch_size() -> None:
    model = Doubler()
    sizes = [1, 3, 2, 3, 1, 1, 2, 3, 3, 1, 2, 2, 1, 3]

    async def body() -> None:
        batcher = await started(DynamicBatcher("m", model, max_batch_size=4, max_batch_delay_s=0.05))
        batcher.arriving = 1  # keep collecting for the whole delay: batches fill up to the limit
        requests = [samples(10 * i, size) for i, size in enumerate(sizes)]
        results = await asyncio.gather(*(batcher.submit(r, len(r["x"])) for r in requests))
        batcher.arriving = 0
        await batcher.stop()
        for request, result in zip(requests, results, strict=True):
            np.testing.assert_array_equal(result["y"], request["x"] * 2)

    run(body)
    assert max(model.calls) <= 4 and sum(model.calls) == sum(sizes)
    assert max(model.calls) > 3, "no request was merged with another"


def test_a_failing_request_fails_alone_and_its_batch_mates_are_served() -> None:
    model = Doubler()

    async def body() -> list[Arrays | BaseException]:
        batcher = await started(DynamicBatcher("m", model, max_batch_size=64, max_batch_delay_s=0.05))
        requests = [samples(1, 2), {"x": -np.ones((1, 3), np.float32)}, samples(5, 1)]
        results = await asyncio.gather(*(batcher.submit(r, len(r["x"])) for r in requests), return_exceptions=True)
        after = await batcher.submit(samples(7, 2), 2)  # the batcher keeps serving
        np.testing.assert_array_equal(after["y"], samples(7, 2)["x"] * 2)
        await batcher.stop()
        return results

    first, failed, last = run(body)
    assert isinstance(failed, InferenceFailed) and "model 'm' failed" in str(failed) and "negative input" in str(failed)
    assert not isinstance(first, BaseException) and not isinstance(last, BaseException)
    np.testing.assert_array_equal(first["y"], samples(1, 2)["x"] * 2)
    np.testing.assert_array_equal(last["y"], samples(5, 1)["x"] * 2)
    assert model.calls[0] == 4, "the three requests were not merged first"


def test_a_model_failure_reaches_exactly_the_requests_of_that_batch() -> None:
    broken = threading.Event()
    broken.set()

    def model(inputs: Arrays) -> Arrays:
        if broken.is_set():
            raise RuntimeError("the session is broken")
        return {"y": inputs["x"] * 2}

    async def body() -> tuple[list[Arrays | BaseException], list[Arrays | BaseException]]:
        batcher = await started(DynamicBatcher("m", model, max_batch_delay_s=0.05))
        failed = await asyncio.gather(*(batcher.submit(samples(i, 1), 1) for i in range(3)), return_exceptions=True)
        broken.clear()
        served = await asyncio.gather(*(batcher.submit(samples(i, 1), 1) for i in range(3)), return_exceptions=True)
        await batcher.stop()
        return failed, served

    failed, served = run(body)
    assert all(isinstance(result, InferenceFailed) and "the session is broken" in str(result) for result in failed)
    for i, result in enumerate(served):
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result["y"], samples(i, 1)["x"] * 2)


def test_a_full_queue_refuses_with_overloaded_and_serves_what_it_took() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(inputs: Arrays) -> Arrays:
        entered.set()
        release.wait(10)
        return {"y": inputs["x"] * 2}

    async def body() -> None:
        batcher = await started(DynamicBatcher("m", slow, max_batch_size=1, max_queue=1))
        running = asyncio.ensure_future(batcher.submit(samples(0, 1), 1))
        while not entered.is_set():  # the worker took the first request and is blocked in the model
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(batcher.submit(samples(i, 1), 1)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue holds 1"):
            await batcher.submit(samples(3, 1), 1)
        release.set()
        for i, future in enumerate([running, *queued]):
            np.testing.assert_array_equal((await future)["y"], samples(i, 1)["x"] * 2)
        await batcher.stop()

    run(body)
