"""Whether a measured cell (one contender at one batch size and thread count) can be quoted as a result.

A median is only a result when the machine held still while it was taken. Three signs say it did not: the rounds
disagree (the load changed between them), the tail is long (calls were preempted often enough to reach p99), or
the machine had more runnable threads than CPUs while the cell ran. A cell showing any of them is measured once
more; what stays unstable is marked in the table, the JSON and the report, and no ratio is computed from it.
"""

from __future__ import annotations

import os

import numpy as np

MAX_ROUND_SPREAD = 0.5
"""(slowest round's median - fastest round's median) / the cell's median. The contenders are interleaved in rounds so
that drift hits them alike; a round 50 % slower than another means the machine changed under the cell by more than
many of the differences the table reports between contenders (a quiet machine stays within ~10-20 %)."""

MAX_TAIL_RATIO = 4.0
"""p99 / median. A model's own work does not vary fourfold from call to call; a tail that long means other work
took the cores often enough to reach the 99th percentile (the issue's eager cell: 20.4 ms median, 67 ms p99, 0.37 ms
in a quiet configuration of the same run), and then the median is suspect too."""

MAX_LOAD_PER_CPU = 1.0
"""The 1-minute load average (the larger of the values at the cell's start and end) per CPU of the machine. Above 1,
runnable threads wait for a core, so the timed calls share cores with work outside the benchmark. The benchmark's
own threads count in the average, which is why the limit is a full CPU each, not a fraction. The average lags by
up to a minute, so it flags a busy period rather than an exact cell; the other two signs are per cell."""


def limits() -> dict[str, float]:
    """The thresholds, as written into bench.json beside the measurements they judged."""
    return {
        "max_round_spread": MAX_ROUND_SPREAD,
        "max_tail_ratio": MAX_TAIL_RATIO,
        "max_load_per_cpu": MAX_LOAD_PER_CPU,
    }


def load_average() -> float:
    """The 1-minute load average; 0 where the platform has none (then only the timings judge)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def instability(seconds: np.ndarray, rounds: int, load: float, cpus: int) -> list[str]:
    """Why a cell's timings cannot be quoted, one short phrase per reason; empty when they can.

    ``seconds`` holds the cell's timed calls in the order they ran, ``rounds`` equal blocks of them (see
    ``inference._interleaved``); ``load`` is the load average during the cell and ``cpus`` the machine's CPUs.
    """
    reasons: list[str] = []
    median = float(np.median(seconds)) if seconds.size else 0.0
    if median <= 0:
        return reasons
    if rounds > 1 and seconds.size >= rounds and seconds.size % rounds == 0:
        per_round = np.median(seconds.reshape(rounds, -1), axis=1)
        spread = float(per_round.max() - per_round.min()) / median
        if spread > MAX_ROUND_SPREAD:
            reasons.append(f"rounds spread {spread:.0%} of the median (limit {MAX_ROUND_SPREAD:.0%})")
    tail = float(np.percentile(seconds, 99)) / median
    if tail > MAX_TAIL_RATIO:
        reasons.append(f"p99 {tail:.1f}× the median (limit {MAX_TAIL_RATIO:g}×)")
    if load > MAX_LOAD_PER_CPU * cpus:
        reasons.append(f"load average {load:.1f} on {cpus} CPUs (limit {MAX_LOAD_PER_CPU:g} per CPU)")
    return reasons
