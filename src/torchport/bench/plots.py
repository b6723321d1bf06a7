"""The benchmark's pictures: latency by batch size per contender, and throughput bars per (batch, threads) cell.

``bench_latency.png``: median latency against batch size on log-log axes, one line per contender and one panel per
thread count, p99 as the upper whisker. ``bench_throughput.png``: samples/s per contender, grouped by cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from torchport.bench.inference import BenchResult
from torchport.plotting import figure_png, pyplot

LATENCY_PNG = "bench_latency.png"
THROUGHPUT_PNG = "bench_throughput.png"


def latency_png(result: BenchResult) -> bytes:
    plt = pyplot()
    threads = sorted({m.threads for m in result.measurements}) or [1]
    figure, axes = plt.subplots(1, len(threads), figsize=(5.5 * len(threads), 4), squeeze=False, sharey=True)
    for axis, count in zip(axes[0], threads, strict=True):
        for name in result.contenders():
            mine = (m for m in result.measurements if m.contender == name and m.threads == count)
            rows = sorted(mine, key=lambda m: m.batch)
            if not rows:
                continue
            batch = [m.batch for m in rows]
            median = np.asarray([m.median_ms for m in rows])
            whisker = np.clip(np.asarray([m.p99_ms for m in rows]) - median, 0, None)
            axis.errorbar(batch, median, yerr=[np.zeros_like(median), whisker], marker="o", capsize=3, label=name)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(result.batches, [str(b) for b in result.batches])
        axis.set_xlabel("batch size")
        axis.set_title(f"{count} thread(s)")
        axis.grid(which="both", alpha=0.3)
    axes[0][0].set_ylabel("median latency, ms (whisker: p99)")
    axes[0][-1].legend(fontsize=8)
    figure.suptitle(f"{result.subject}: latency by batch size (lower is better)", fontsize=10)
    figure.tight_layout()
    return figure_png(figure)


def throughput_png(result: BenchResult) -> bytes:
    plt = pyplot()
    contenders = result.contenders()
    cells = sorted({(m.threads, m.batch) for m in result.measurements})
    labels = [f"batch {b}, {t} thr" for t, b in cells]
    width = 0.8 / max(len(contenders), 1)
    figure, axis = plt.subplots(figsize=(max(7.0, 1.6 * len(cells)), 4))
    positions = np.arange(len(cells))
    for index, name in enumerate(contenders):
        found = {(m.threads, m.batch): m.throughput for m in result.measurements if m.contender == name}
        x = positions + (index - (len(contenders) - 1) / 2) * width
        axis.bar(x, [found.get(cell, np.nan) for cell in cells], width, label=name)
    axis.set_yscale("log")
    axis.set_xticks(positions, labels, fontsize=8)
    axis.set_ylabel("samples/s")
    axis.grid(axis="y", which="both", alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    axis.set_title(f"{result.subject}: throughput (higher is better)", fontsize=10)
    figure.tight_layout()
    return figure_png(figure)


def write_plots(result: BenchResult, directory: Path) -> list[Path]:
    written = []
    for name, draw in ((LATENCY_PNG, latency_png), (THROUGHPUT_PNG, throughput_png)):
        path = directory / name
        path.write_bytes(draw(result))
        written.append(path)
    return written
