"""The benchmark's defaults, in one place: `torchport bench`'s options, the measuring functions' parameters, and
the ``bench:`` section of a config (which holds copies, checked equal by tests/bench/test_defaults.py: config.py
sits below bench in the layers and cannot import this module).

This module imports nothing, so the CLI can read it while it builds ``--help``.
"""

from __future__ import annotations

from typing import Final, Literal

BATCH_SIZES: Final[tuple[int, ...]] = (1, 8, 64)
"""One sample (latency), a small batch, and a batch large enough to show throughput."""

THREADS: Final[tuple[int | Literal["all"], ...]] = (1, "all")
"""What a user measures unless they say otherwise: one intra-op thread, then every CPU this process may use."""

SINGLE_THREAD: Final[tuple[int, ...]] = (1,)
"""The measuring functions' own default when a caller names no thread counts: one cell per batch size, quick and
comparable from machine to machine (scripts and tests); the CLI and `torchport run` ask for ``THREADS``."""

ITERATIONS: Final = 100
"""The most timed calls per contender and cell; fewer when ``BUDGET_S`` runs out first."""

BUDGET_S: Final = 2.0
"""Seconds of timed calls per contender and cell."""

RUN_BUDGET_S: Final = 20.0
"""`torchport run`'s benchmark: seconds of timed calls in all, shared out over its cells and contenders."""

COMPILE: Final = True
"""Whether torch.compile is among the contenders (about 10 s of compiling per batch size)."""
