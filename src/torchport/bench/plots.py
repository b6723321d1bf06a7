"""bench.png: median latency (log scale, p99 as a whisker) and throughput per contender, grouped by batch size."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from torchport.bench.inference import BenchResult


def plot_png(result: BenchResult, dpi: int = 110) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contenders = result.contenders()
    cells = sorted({(m.threads, m.batch) for m in result.measurements})
    labels = [f"batch {b}" + (f", {t} thr" if len(result.threads) > 1 else "") for t, b in cells]
    width = 0.8 / max(len(contenders), 1)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    positions = np.arange(len(cells))
    for index, name in enumerate(contenders):
        found = {(m.threads, m.batch): m for m in result.measurements if m.contender == name}
        median = [found[c].median_ms if c in found else np.nan for c in cells]
        p99 = [found[c].p99_ms if c in found else np.nan for c in cells]
        speed = [found[c].throughput if c in found else np.nan for c in cells]
        x = positions + (index - (len(contenders) - 1) / 2) * width
        whisker = np.clip(np.asarray(p99) - np.asarray(median), 0, None)
        axes[0].bar(x, median, width, label=name, yerr=[np.zeros(len(cells)), whisker], capsize=2)
        axes[1].bar(x, speed, width, label=name)
    for axis, title in zip(axes, ("median latency, ms (whisker: p99)", "throughput, samples/s"), strict=True):
        axis.set_yscale("log")
        axis.set_xticks(positions, labels)
        axis.set_title(title)
        axis.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{result.subject}: lower latency / higher throughput is better", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def write_plot(result: BenchResult, path: Path) -> Path:
    path.write_bytes(plot_png(result))
    return path
