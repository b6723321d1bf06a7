"""Measure contenders side by side: median and p99 latency, throughput, ratios and the error against eager.

A contender is a name and a ``prepare(threads, batch_input)`` that returns a zero-argument call; preparing does the
work that must stay outside the timing (making an ONNX Runtime session, compiling with torch.compile). The timed
calls are interleaved in rounds (every contender runs a block, then the next), so drift in the machine's load hits
all contenders alike. A cell whose timings are unstable (bench/stability.py) is measured once more; a row that stays
unstable is marked ``stable: false`` and no ratio is computed from it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torchport.bench import defaults
from torchport.bench.stability import instability, limits, load_average
from torchport.errors import first_line

Call = Callable[[], np.ndarray]
EAGER = "pytorch eager"
ORT_FP32 = "ort fp32"


@dataclass
class Contender:
    name: str
    runtime: str
    prepare: Callable[[int, np.ndarray], Call]
    artifact: str | None = None
    precision: str = "fp32"  # the arithmetic it runs: only fp32 is compared with the FP32 peak


@dataclass
class Measurement:
    contender: str
    runtime: str
    artifact: str | None
    batch: int
    threads: int
    median_ms: float
    p99_ms: float
    throughput: float = field(metadata={"unit": "samples/s at the median latency"})
    iterations: int
    prepare_s: float = field(metadata={"unit": "seconds to build the session or compile, outside the timing"})
    max_abs_diff: float | None = None  # first output against eager's on the same input
    argmax_agreement: float | None = None  # classifiers (2-D first output): share of rows whose argmax matches eager
    vs_eager: float | None = None  # eager median / this median: > 1 is faster than eager
    vs_ort_fp32: float | None = None
    gflops: float | None = None  # the model's FLOPs at this batch / the median: achieved (for int8: effective) GFLOP/s
    peak_fraction: float | None = None  # fp32 rows: gflops / this machine's peak FP32 rate on ``threads`` cores
    precision: str = "fp32"
    stable: bool = True  # false: the timings cannot be quoted (bench/stability.py); no ratio is computed from them
    unstable_because: list[str] = field(default_factory=list)  # one phrase per reason, empty when stable
    remeasured: bool = False  # the cell looked unstable at first and was measured once more; these are the new times


@dataclass
class BenchResult:
    subject: str
    machine: str
    batches: list[int]
    threads: list[int]
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flops: dict[int, int] = field(default_factory=dict)  # batch size -> FLOPs of one forward pass
    peak: dict[str, Any] | None = None  # PeakEstimate.to_dict(): how the peak was derived
    iterations: int | None = None  # the most timed calls per contender and cell
    budget_s: float | None = None  # seconds of timed calls per contender and cell
    stability_limits: dict[str, float] | None = None  # the thresholds that judged each row's ``stable``

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path

    def contenders(self) -> list[str]:
        return list(dict.fromkeys(m.contender for m in self.measurements))


def read_result(path: Path) -> BenchResult:
    raw: dict[str, Any] = json.loads(path.read_text())
    measurements = [Measurement(**m) for m in raw.pop("measurements", [])]
    flops = {int(batch): int(count) for batch, count in raw.pop("flops", {}).items()}  # JSON keys are strings
    return BenchResult(**raw, measurements=measurements, flops=flops)


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    versions = []
    for package in ("torch", "onnxruntime"):
        try:
            module = __import__(package)
            versions.append(f"{package} {module.__version__}")
        except ImportError:
            pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} CPUs; {', '.join(versions)}; load average {load:.1f} at start"


def iterations_for(seconds_per_call: float, budget_s: float, least: int, most: int) -> int:
    return int(max(least, min(most, budget_s / max(seconds_per_call, 1e-6))))


def _first_output(value: Any) -> np.ndarray:
    """The first output of a call as float64 NumPy: a tensor, an array, or a tuple/list of them."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    if hasattr(value, "detach"):
        value = value.detach().float().numpy()
    return np.asarray(value, dtype=np.float64)


SETTLE_S = 0.02


def _interleaved(calls: dict[str, Call], iterations: int, rounds: int, settle_s: float = 0.0) -> dict[str, np.ndarray]:
    """Seconds per call for each contender: ``rounds`` rounds, each running every contender for a block.

    ``settle_s`` of idle time before each block lets the previous contender's thread pool stop spinning: with
    several threads, OpenMP (PyTorch) and ONNX Runtime workers busy-wait for a while after their work, and would
    otherwise steal the next contender's cores.
    """
    block = max(1, math.ceil(iterations / rounds))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            time.sleep(settle_s)
            for _ in range(block):
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)
    return {name: np.asarray(values) for name, values in times.items()}


def _ratio(reference: float | None, value: float) -> float | None:
    return round(reference / value, 3) if reference and value > 0 else None


def bench_contenders(
    subject: str,
    contenders: Sequence[Contender],
    inputs: dict[int, np.ndarray],
    threads: Sequence[int] = defaults.SINGLE_THREAD,
    iterations: int = defaults.ITERATIONS,
    budget_s: float = defaults.BUDGET_S,
    least: int = 5,
    warmup: int = 3,
    rounds: int = 5,
    progress: Callable[[str], None] = lambda _: None,
    flop_counter: Callable[[np.ndarray], int] | None = None,
) -> BenchResult:
    """Measure every contender at every (threads, batch) on the same ``inputs[batch]``.

    ``iterations`` is the most timed calls per contender and cell; fewer when ``budget_s`` seconds would be exceeded,
    judged from the slowest contender's warm-up (never fewer than ``least``). A contender whose prepare or warm-up
    raises is left out of that cell with a one-line note. The first contender is the reference for ``max_abs_diff``
    and ``vs_eager``. With ``flop_counter`` (the model's FLOPs for an input batch), every row also gets achieved
    GFLOP/s and its fraction of this machine's estimated peak.
    """
    import torch

    from torchport.bench.peak import estimate_peak

    result = BenchResult(subject, machine_description(), sorted(inputs), list(threads))
    result.iterations, result.budget_s = iterations, round(budget_s, 4)
    result.stability_limits = limits()
    if flop_counter is not None:
        result.flops = {batch: flop_counter(array) for batch, array in sorted(inputs.items())}
        peak = estimate_peak()
        result.peak = peak.to_dict()
        progress(peak.derivation())
    torch_threads = torch.get_num_threads()
    try:
        for count in threads:
            torch.set_num_threads(count)
            for batch, array in sorted(inputs.items()):
                result.measurements += _bench_cell(
                    contenders, count, batch, array, result.notes, iterations, budget_s, least, warmup, rounds, progress
                )
    finally:
        torch.set_num_threads(torch_threads)
    if result.peak is not None:
        _add_rates(result, result.peak["per_core_gflops"], result.peak["cores"])
    return result


def _add_rates(result: BenchResult, per_core_gflops: float, cores: int) -> None:
    from torchport.bench.peak import peak_gflops

    for row in result.measurements:
        flops = result.flops.get(row.batch)
        if not flops or row.median_ms <= 0:
            continue
        row.gflops = round(flops / (row.median_ms * 1e-3) / 1e9, 2)
        if row.precision != "fp32":  # integer or half arithmetic has other peaks than the FP32 one derived here
            continue
        row.peak_fraction = round(row.gflops / peak_gflops(per_core_gflops, cores, row.threads), 3)


def _bench_cell(
    contenders: Sequence[Contender],
    threads: int,
    batch: int,
    array: np.ndarray,
    notes: list[str],
    iterations: int,
    budget_s: float,
    least: int,
    warmup: int,
    rounds: int,
    progress: Callable[[str], None],
) -> list[Measurement]:
    calls: dict[str, Call] = {}
    outputs: dict[str, np.ndarray] = {}
    prepare_s: dict[str, float] = {}
    slowest = 0.0
    where = f"batch {batch}, {threads} thread(s)"
    for contender in contenders:
        progress(f"{where}: preparing {contender.name}")
        started = time.perf_counter()
        try:
            call = contender.prepare(threads, array)
            outputs[contender.name] = _first_output(call())  # the first call compiles / allocates: not timed
            prepare_s[contender.name] = time.perf_counter() - started
            begun = time.perf_counter()
            for _ in range(warmup):
                call()
            slowest = max(slowest, (time.perf_counter() - begun) / max(warmup, 1))
        except Exception as exc:  # one contender failing (e.g. torch.compile without a compiler) is a note, not a stop
            message = first_line(exc)[:200]
            notes.append(f"{contender.name} failed at {where}: {type(exc).__name__}: {message}")
            continue
        calls[contender.name] = call
    count = iterations_for(slowest, budget_s, least, iterations)
    progress(f"{where}: timing {len(calls)} contender(s) x {count} calls")
    rows = _timed_rows(contenders, calls, outputs, prepare_s, batch, threads, count, rounds)
    unsteady = [r.contender for r in rows if not r.stable]
    if unsteady:  # once more, all contenders (they are compared with each other), and these times replace the first
        progress(f"{where}: unstable ({', '.join(unsteady)}), measuring once more")
        rows = _timed_rows(contenders, calls, outputs, prepare_s, batch, threads, count, rounds)
        for row in rows:
            row.remeasured = True
    return rows


def _timed_rows(
    contenders: Sequence[Contender],
    calls: dict[str, Call],
    outputs: dict[str, np.ndarray],
    prepare_s: dict[str, float],
    batch: int,
    threads: int,
    count: int,
    rounds: int,
) -> list[Measurement]:
    """Time the prepared ``calls`` interleaved and make one row per contender, each judged stable or not; ratios
    only between stable rows."""
    load = load_average()
    times = _interleaved(calls, count, rounds, SETTLE_S if threads > 1 else 0.0)
    load = max(load, load_average())
    cpus = os.cpu_count() or 1
    reference = contenders[0].name
    rows = []
    for contender in contenders:
        if contender.name not in times:
            continue
        seconds = times[contender.name]
        reasons = instability(seconds, rounds, load, cpus)
        median = float(np.median(seconds))
        diff = agreement = None
        mine, theirs = outputs[contender.name], outputs.get(reference)
        if theirs is not None and theirs.shape == mine.shape and mine.size:
            diff = float(np.max(np.abs(mine - theirs)))
            if mine.ndim == 2 and mine.shape[1] > 1:
                agreement = float(np.mean(mine.argmax(axis=1) == theirs.argmax(axis=1)))
        rows.append(
            Measurement(
                contender=contender.name,
                runtime=contender.runtime,
                artifact=contender.artifact,
                batch=batch,
                threads=threads,
                median_ms=round(median * 1e3, 4),
                p99_ms=round(float(np.percentile(seconds, 99)) * 1e3, 4),
                throughput=round(batch / median, 1),
                iterations=int(seconds.size),
                prepare_s=round(prepare_s[contender.name], 3),
                precision=contender.precision,
                max_abs_diff=diff,
                argmax_agreement=agreement,
                stable=not reasons,
                unstable_because=reasons,
            )
        )
    eager = next((r for r in rows if r.contender == reference), None)
    fp32 = next((r for r in rows if r.contender == ORT_FP32), None)
    for row in rows:
        row.vs_eager = _stable_ratio(eager, row)
        row.vs_ort_fp32 = _stable_ratio(fp32, row)
    return rows


def _stable_ratio(reference: Measurement | None, row: Measurement) -> float | None:
    """reference median / row median, or None when either is missing or unstable: noise is not a speed-up."""
    if reference is None or not (reference.stable and row.stable):
        return None
    return _ratio(reference.median_ms, row.median_ms)
