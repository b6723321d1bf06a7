"""Unstable cells (finding 10): classified from synthetic timings, re-measured once, and marked, never given a ratio.

No assertion here depends on how fast anything runs: the timings are made up and the timer is replaced.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from torchport.bench import inference
from torchport.bench.inference import EAGER, ORT_FP32, BenchResult, Contender, Measurement, bench_contenders
from torchport.bench.stability import MAX_LOAD_PER_CPU, MAX_ROUND_SPREAD, MAX_TAIL_RATIO, instability
from torchport.bench.table import table_rows

STEADY = np.full(20, 1e-3) + np.linspace(0, 2e-5, 20)  # 4 rounds of 5 calls, about 1 ms each


def test_steady_timings_are_stable() -> None:
    assert instability(STEADY, rounds=4, load=0.5, cpus=2) == []


def test_a_slow_round_is_unstable() -> None:
    seconds = STEADY.copy()
    seconds[15:] *= 1 + 2 * MAX_ROUND_SPREAD  # the last round ran while something else took the cores
    reasons = instability(seconds, rounds=4, load=0.5, cpus=2)
    assert len(reasons) == 1 and reasons[0].startswith("rounds spread"), reasons


def test_a_long_tail_is_unstable() -> None:
    seconds = np.concatenate([np.full(98, 1e-3), np.full(2, 1e-3 * MAX_TAIL_RATIO * 3)])
    rng = np.random.default_rng(0)
    reasons = instability(rng.permutation(seconds), rounds=1, load=0.5, cpus=2)
    assert len(reasons) == 1 and reasons[0].startswith("p99"), reasons


def test_a_busy_machine_is_unstable() -> None:
    reasons = instability(STEADY, rounds=4, load=2 * MAX_LOAD_PER_CPU * 2 + 0.5, cpus=2)
    assert len(reasons) == 1 and reasons[0].startswith("load average"), reasons


def _contender(name: str) -> Contender:
    return Contender(name, "fake", lambda threads, array: lambda: array)


def _fake_timer(monkeypatch: pytest.MonkeyPatch, noisy_calls: int, noisy: str) -> list[int]:
    """Replace the timed loop: the first ``noisy_calls`` timings of the cell give ``noisy`` a long tail."""
    calls: list[int] = []

    def interleaved(calls_by_name, iterations, rounds, settle_s=0.0):  # type: ignore[no-untyped-def]
        calls.append(1)
        times = {name: STEADY.copy() * (1 if name == EAGER else 0.5) for name in calls_by_name}
        if len(calls) <= noisy_calls:
            times[noisy][-1] = 0.1  # one call of 100 ms among 1 ms ones: p99 far above the median
        return times

    monkeypatch.setattr(inference, "_interleaved", interleaved)
    monkeypatch.setattr(inference, "load_average", lambda: 0.0)
    return calls


def _bench() -> BenchResult:
    contenders = [_contender(EAGER), _contender(ORT_FP32)]
    return bench_contenders("fake", contenders, {1: np.ones((1, 3), np.float32)}, iterations=20, least=20, rounds=4)


def test_an_unstable_cell_is_measured_again_and_kept_when_it_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    timings = _fake_timer(monkeypatch, noisy_calls=1, noisy=EAGER)
    result = _bench()
    assert len(timings) == 2  # measured once more
    by = {m.contender: m for m in result.measurements}
    assert all(m.stable and m.remeasured and not m.unstable_because for m in by.values())
    assert by[ORT_FP32].vs_eager == 2.0


def test_a_cell_that_stays_unstable_is_marked_not_given_a_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    timings = _fake_timer(monkeypatch, noisy_calls=2, noisy=EAGER)
    result = _bench()
    assert len(timings) == 2  # once more, not forever
    by = {m.contender: m for m in result.measurements}
    eager, fp32 = by[EAGER], by[ORT_FP32]
    assert not eager.stable and eager.unstable_because[0].startswith("p99")
    assert fp32.stable  # its own timings were fine, but its ratio to an unstable eager is not a result
    assert eager.vs_eager is None and fp32.vs_eager is None and fp32.vs_ort_fp32 == 1.0

    saved = json.loads(result.to_json())
    row = next(m for m in saved["measurements"] if m["contender"] == EAGER)
    assert row["stable"] is False and row["unstable_because"] and row["vs_eager"] is None
    assert saved["stability_limits"] == {
        "max_round_spread": MAX_ROUND_SPREAD,
        "max_tail_ratio": MAX_TAIL_RATIO,
        "max_load_per_cpu": MAX_LOAD_PER_CPU,
    }


def test_the_table_marks_unstable_cells_even_with_a_stored_ratio(tmp_path: Path) -> None:
    """A bench.json written before (or by hand) may carry a ratio for an unstable cell: the table never shows it."""
    rows = [
        Measurement(EAGER, "fake", None, 1, 2, 20.4, 67.0, 49.0, 5, 0.0, stable=False, unstable_because=["p99 3.3×"]),
        Measurement(ORT_FP32, "fake", None, 1, 2, 0.34, 0.4, 2900.0, 5, 0.0, vs_eager=59.53, vs_ort_fp32=1.0),
    ]
    result = BenchResult("fake", "m", [1], [2], rows)
    cells = table_rows(result, lambda value: "-" if value is None else f"{value:.2f}×")
    assert not any("59.53" in cell for row in cells for cell in row)
    eager, fp32 = cells
    assert "unstable" in eager[2] and eager[6] == "unstable"
    assert fp32[6] == "ref unstable" and fp32[7] == "1.00×"
    assert inference.read_result(result.write(tmp_path / "bench.json")) == result
