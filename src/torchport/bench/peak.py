"""This machine's peak FP32 rate, derived from what the CPU says about itself, and the model's FLOPs.

Peak per core = FP32 lanes per vector register × FMA units × 2 FLOP per fused multiply-add × clock. The lanes come
from the instruction-set flags in ``/proc/cpuinfo`` (AVX-512: 16, AVX2: 8, SSE: 4); the clock from cpufreq's
maximum when the kernel exposes it, else the ``cpu MHz`` line (the nominal clock, all a VM usually shows: boost can
run above it, so a measured fraction slightly over 1.0 means the clock estimate is low, not the counter wrong).
Two FMA units per core is an assumption that holds for AVX2 x86 cores of the last decade (Haswell on, Zen 2 on);
with AVX-512 it overstates the peak 2× on parts with one 512-bit unit (Xeon Silver/Bronze, client chips) and on
Zen 4, which runs AVX-512 on 256-bit units. The derivation is printed so a reader can correct it. Cores are physical
cores (hyperthread siblings share one set of FMA units), counted from the kernel's topology.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FLOP_PER_FMA = 2
ASSUMED_FMA_UNITS = 2


@dataclass(frozen=True)
class PeakEstimate:
    vector: str  # the widest FP32 vector unit found: avx512f, avx2, sse, or unknown
    lanes: int  # FP32 values per vector register
    fma_units: int
    clock_ghz: float
    clock_source: str
    cores: int  # physical cores among the CPUs this process may run on

    @property
    def per_core_gflops(self) -> float:
        return self.lanes * self.fma_units * FLOP_PER_FMA * self.clock_ghz

    def gflops(self, threads: int) -> float:
        """The peak for a run on ``threads`` intra-op threads: no more cores than this process may use."""
        return peak_gflops(self.per_core_gflops, self.cores, threads)

    def derivation(self) -> str:
        return (
            f"peak FP32 = {self.lanes} lanes ({self.vector}) × {self.fma_units} FMA units (assumed) × "
            f"{FLOP_PER_FMA} FLOP per FMA × {self.clock_ghz:.2f} GHz ({self.clock_source}) = "
            f"{self.per_core_gflops:.1f} GFLOP/s per core; × {self.cores} core(s) = "
            f"{self.gflops(self.cores):.1f} GFLOP/s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_core_gflops": round(self.per_core_gflops, 2), "derivation": self.derivation()}


def peak_gflops(per_core_gflops: float, cores: int, threads: int) -> float:
    """Threads beyond the physical cores add no FMA units: the peak stops growing there."""
    return per_core_gflops * max(1, min(threads, cores))


def physical_cores(cpus: set[int], sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Distinct physical cores among ``cpus``: hyperthread siblings share a core (its ``core_cpus_list``)."""
    cores = set()
    for cpu in cpus:
        try:
            cores.add((sysfs / f"cpu{cpu}" / "topology" / "core_cpus_list").read_text().strip())
        except OSError:
            cores.add(f"cpu{cpu}")  # no topology: count the CPU as a core
    return max(1, len(cores))


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _vector(flags: set[str]) -> tuple[str, int]:
    for flag, lanes in (("avx512f", 16), ("avx2", 8), ("avx", 8), ("sse2", 4)):
        if flag in flags:
            return flag, lanes
    if platform.machine() in ("arm64", "aarch64"):
        return "neon", 4
    return "unknown", 4


def _clock_ghz(cpuinfo: str, cpufreq: Path) -> tuple[float, str]:
    try:
        return int(cpufreq.read_text()) / 1e6, "cpufreq maximum"
    except (OSError, ValueError):
        pass
    for line in cpuinfo.splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1]) / 1e3, "cpu MHz in /proc/cpuinfo"
    return 2.0, "unknown: 2 GHz assumed"


CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")


def estimate_peak(cpuinfo: str | None = None, cpufreq: Path = CPUFREQ_MAX) -> PeakEstimate:
    """This machine's estimate; ``cpuinfo`` and ``cpufreq`` stand in for /proc/cpuinfo and cpufreq's maximum."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    vector, lanes = _vector(flags)
    fma_units = ASSUMED_FMA_UNITS if ("fma" in flags or vector in ("avx512f", "neon")) else 1
    clock, source = _clock_ghz(text, cpufreq)
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = physical_cores(cpus)
    return PeakEstimate(vector, lanes, fma_units, round(clock, 3), source, cores)


def count_flops(module: Any, array: Any) -> int:
    """Floating-point operations of one forward pass on ``array``, counted by ``torch.utils.flop_counter``.

    The counter sees matrix multiplies and convolutions (2 FLOP per multiply-add), which is where the time of the
    models we export goes; element-wise work is left out, as in the usual published figures.
    """
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(torch.from_numpy(np.ascontiguousarray(array)))
    return int(counter.get_total_flops())
