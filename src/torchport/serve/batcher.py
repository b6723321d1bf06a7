"""Dynamic batching: concurrent requests for one model merged into one ONNX Runtime call.

One asyncio worker per model takes the first queued request, then everything already queued (up to
``max_batch_size`` samples), and waits up to ``max_batch_delay`` for more only while other requests for the model
are still being read and parsed — so a lone client never pays the delay, and a busy server fills its batches while
the previous batch runs. gRPC reads a whole message before the server sees the call, so its calls are never seen
arriving; instead :class:`RecentPeak` counts how many were in flight at once lately, and a batch smaller than that
waits (up to the same delay) for the callers who are likely to come back: never for a lone client. Results are
sliced back per request. Requests are validated before they are queued, and if a merged batch still fails, each of
its requests is rerun alone, so one bad request never fails its batch-mates.

Where a batch runs: in the model's own worker thread (ONNX Runtime releases the GIL, so the event loop parses the
next requests meanwhile), unless recent calls of its size took under ``inline_below_s`` (0.5 ms) — then handing it
to the thread and back costs about as much as running it, and it runs on the event loop. (Running a cheap request
straight from ``submit`` when the worker is idle was tried and dropped: every request then finds the worker idle,
and nothing is ever batched.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from torchport.errors import first_line
from torchport.serve.settings import DEFAULTS

Arrays = dict[str, np.ndarray]
log = logging.getLogger("torchport.serve")


class Overloaded(Exception):
    """The model's queue is full; the server answers 503."""


class InferenceFailed(Exception):
    """ONNX Runtime failed on a request that passed validation: the server's fault, answered 500 (a caller's
    fault is caught by validation, before the request is queued)."""


class RecentPeak:
    """The most calls in flight at once over the last ``window_s`` (then it starts again from those in flight):
    how many callers a batch may expect, when their requests cannot be seen arriving."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.in_flight = 0
        self.peak = 0
        self._since = 0.0

    def enter(self) -> None:
        self.in_flight += 1
        now = time.monotonic()
        if now - self._since > self.window_s:
            self.peak, self._since = self.in_flight, now
        elif self.in_flight > self.peak:
            self.peak = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    @property
    def expected(self) -> int:
        """The callers to expect: the recent peak, or those in flight once no call came for a whole window."""
        return self.peak if time.monotonic() - self._since <= self.window_s else self.in_flight


@dataclass
class _Item:
    inputs: Arrays
    batch: int
    future: asyncio.Future[Arrays]


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        run: Callable[[Arrays], Arrays],
        *,
        max_batch_size: int = DEFAULTS.max_batch_size,
        max_batch_delay_s: float = DEFAULTS.max_batch_delay_ms / 1000.0,
        max_queue: int = DEFAULTS.max_queue,
        mergeable: bool = True,
        on_batch: Callable[[int], None] | None = None,
        inline_below_s: float = 0.0005,
    ) -> None:
        self.name = name
        self.run = run
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_delay_s = max(0.0, max_batch_delay_s)
        self.max_queue = max_queue
        self.mergeable = mergeable
        self.on_batch = on_batch
        self.inline_below_s = inline_below_s
        self.arriving = 0  # requests for this model being read and parsed right now
        self.callers = RecentPeak()  # calls whose arrival cannot be seen (gRPC), entered and left by their handler
        self._queued_samples = 0  # samples of the requests in the queue (not the carried one)
        self._queue: asyncio.Queue[_Item] | None = None
        self._carry: _Item | None = None
        self._task: asyncio.Task[None] | None = None
        self._seconds: dict[int, float] = {}  # moving average of one call's seconds by batch size class (bit length)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker and its thread."""
        if self._queue is not None:
            while not self._queue.empty() or self._carry is not None:
                await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return (self._queue.qsize() if self._queue is not None else 0) + (self._carry is not None)

    @property
    def backlog(self) -> int:
        """Queued requests that will not ride in the next batch: what ``max_queue`` bounds. The next batch takes
        the first queued request and then up to ``max_batch_size`` samples; requests are counted pro rata by their
        samples (one request, for a model that does not merge). Requests that fill the next batch cost no extra
        wait, so shedding them would only lower the goodput: under a flood, every batch still runs full."""
        depth = self.depth
        if depth <= 1:
            return 0
        if not self.mergeable:
            return depth - 1
        samples = self._queued_samples + (self._carry.batch if self._carry is not None else 0)
        fits = max(1, self.max_batch_size * depth // max(1, samples))
        return max(0, depth - fits)

    async def submit(self, inputs: Arrays, batch: int) -> Arrays:
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self.backlog >= self.max_queue:
            message = f"model '{self.name}' has {self.backlog} requests queued beyond its next batch"
            raise Overloaded(f"{message} (the queue holds {self.max_queue}); try again later")
        future: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(inputs, batch, future))
        self._queued_samples += batch
        return await future

    def _take(self, item: _Item) -> _Item:
        self._queued_samples -= item.batch
        return item

    def _cheap(self, size: int) -> bool:
        """Recent calls of this batch size class took under ``inline_below_s`` (unknown: not cheap)."""
        return self._seconds.get(size, self.inline_below_s) < self.inline_below_s

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        first = self._carry if self._carry is not None else self._take(await self._queue.get())
        self._carry = None
        items, total = [first], first.batch
        if not self.mergeable:
            return items
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_batch_delay_s
        while total < self.max_batch_size:
            if not self._queue.empty():
                item = self._take(self._queue.get_nowait())
            else:
                remaining = deadline - loop.time()
                if (self.arriving <= 0 and len(items) >= self.callers.expected) or remaining <= 0:
                    break
                try:
                    item = self._take(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            if total + item.batch > self.max_batch_size:
                self._carry = item
                break
            items.append(item)
            total += item.batch
        return items

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            try:
                await self._run_batch(loop, items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the worker alive whatever happens
                log.exception("batch for model %s failed", self.name)
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(
                            InferenceFailed(f"model '{self.name}' failed: internal error ({type(exc).__name__})")
                        )

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, items: list[_Item]) -> None:
        live = [item for item in items if not item.future.done()]  # a cancelled client no longer waits
        if not live:
            return
        if self.on_batch is not None:
            self.on_batch(sum(item.batch for item in live))
        if len(live) == 1:
            merged = live[0].inputs
        else:
            merged = {name: np.concatenate([item.inputs[name] for item in live]) for name in live[0].inputs}
        size = sum(item.batch for item in live).bit_length()
        try:
            if self._cheap(size):
                results = self._timed_run(merged, size)
                await asyncio.sleep(0)  # a backlog of cheap batches must not starve health checks and new arrivals
            else:
                results = await loop.run_in_executor(self._executor, self._timed_run, merged, size)
        except Exception as exc:
            if len(live) == 1:
                _settle(live[0], exc=exc, model=self.name)
                return
            for item in live:  # rerun alone so only the culprit fails
                try:
                    _settle(item, await loop.run_in_executor(self._executor, self.run, item.inputs))
                except Exception as single:
                    _settle(item, exc=single, model=self.name)
            return
        start = 0
        for item in live:
            stop = start + item.batch
            _settle(item, {name: value[start:stop] for name, value in results.items()} if len(live) > 1 else results)
            start = stop

    def _timed_run(self, inputs: Arrays, size: int) -> Arrays:
        """Run and keep a moving average of successful calls' seconds (a call that fails fast proves nothing)."""
        start = time.perf_counter()
        results = self.run(inputs)
        seconds = time.perf_counter() - start
        self._seconds[size] = 0.8 * self._seconds.get(size, seconds) + 0.2 * seconds
        return results


def _settle(item: _Item, results: Arrays | None = None, exc: BaseException | None = None, model: str = "") -> None:
    if item.future.done():
        return
    if exc is not None:
        message = first_line(exc, type(exc).__name__)[:300]
        item.future.set_exception(InferenceFailed(f"model '{model}' failed in ONNX Runtime: {message}"))
    else:
        assert results is not None
        item.future.set_result(results)
