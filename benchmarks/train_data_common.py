"""Helpers shared by the sections of benchmarks/train_data.py: where generated data lives, and ``torchport train``
run as a child process with its wall time and peak resident memory (largest process, and whole process tree).

Memory is read from /proc and GNU time (``/usr/bin/time -v``), so the parquet section needs Linux; psutil is not
a torchport dependency, and /proc/<pid>/task/<tid>/children is missing on kernels built without it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MIB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def workdir(given: Path | None) -> tuple[Path, bool]:
    """``--workdir`` (kept, so generated data is reused next time), else a fresh temporary folder (deleted)."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        return given.resolve(), False
    return Path(tempfile.mkdtemp(prefix="tp_bench_")), True


def train_summary(config: Any) -> dict[str, Any]:
    """``torchport train`` of ``config`` in this process, quiet, in a temporary run dir: its summary.json (whose
    samples/s counts from the first step to the last checkpoint on disk)."""
    from rich.console import Console

    from torchport.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        return train(config, Path(tmp) / "run", console=Console(quiet=True))


def write_config(raw: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class ChildRun:
    """One ``torchport train`` child: its summary.json, wall time, peaks and the phase each peak fell in."""

    summary: dict[str, Any]
    wall_s: float
    # bytes: GNU time's "Maximum resident set size", exact. Linux reports the largest of the process and each
    # descendant it reaped (DataLoader workers) on its own, never their sum.
    largest_peak: int
    tree_peak: int  # bytes: largest sum of RSS over the process tree, sampled (shared pages count once per process)
    phase_peaks: dict[str, int] = field(default_factory=dict)  # phase -> largest sampled tree RSS in it
    phase_seconds: dict[str, float] = field(default_factory=dict)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc/<pid>/stat (the field after the ``(comm)``)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # it ended between the listing and the read
        parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    return parents


def descendants(root: int) -> list[int]:
    """Every live process below ``root``: its children, their children, and so on."""
    parents = _parents()
    found: list[int] = []
    frontier = {root}
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = set(children)
    return found


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` (0 once it has ended): /proc/<pid>/statm's second field, in pages."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreeSampler(threading.Thread):
    """Samples the RSS of ``root``'s descendants every ``interval`` s; ``phase()`` names what the run is doing."""

    def __init__(self, root: int, phase: Callable[[], str], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.phase, self.interval = root, phase, interval
        self.peaks: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        last = time.perf_counter()
        while not self.done.is_set():
            total = sum(rss(pid) for pid in descendants(self.root))
            name, now = self.phase(), time.perf_counter()
            self.peaks[name] = max(self.peaks.get(name, 0), total)
            self.seconds[name] = self.seconds.get(name, 0.0) + now - last
            last = now
            self.done.wait(self.interval)


def train_child(config: Path, run_dir: Path, overrides: list[str], phase: Callable[[], str]) -> ChildRun:
    """``python -m torchport.cli train`` under ``/usr/bin/time -v``; a failure raises with the child's last lines."""
    timing = run_dir.parent / f"{run_dir.name}.time"
    command = ["/usr/bin/time", "-v", "-o", str(timing), sys.executable, "-m", "torchport.cli", "train"]
    command += [str(config), "--run-dir", str(run_dir), "--overwrite", *overrides]
    log = run_dir.parent / f"{run_dir.name}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(child.pid, phase)  # the time process: its descendants are torchport and its workers
        sampler.start()
        code = child.wait()
        sampler.done.set()
        sampler.join()
    wall = time.perf_counter() - started
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"torchport train failed (exit {code}): {' '.join(command)}\n{tail}")
    summary = json.loads((run_dir / "summary.json").read_text())
    tree_peak = max(sampler.peaks.values(), default=0)
    return ChildRun(summary, wall, peak_rss(timing), tree_peak, sampler.peaks, sampler.seconds)


def peak_rss(timing: Path) -> int:
    """Bytes: "Maximum resident set size" from the file ``/usr/bin/time -v -o`` wrote (0 when absent)."""
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing.read_text())
    return int(found.group(1)) * 1024 if found else 0


def python_peak(code: str, timing: Path) -> int:
    """Peak RSS in bytes of a fresh interpreter running ``code``, under ``/usr/bin/time -v``."""
    return python_run(code, timing)[0]


def python_run(code: str, timing: Path) -> tuple[int, str]:
    """Peak RSS in bytes and the stdout of a fresh interpreter running ``code``, under ``/usr/bin/time -v``."""
    command = ["/usr/bin/time", "-v", "-o", str(timing), sys.executable, "-c", code]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return peak_rss(timing), done.stdout


def mib(size: float) -> str:
    return f"{size / MIB:,.0f} MiB"
