"""The report's own pictures: training curves, and the parity error of every artifact in every runtime."""

from __future__ import annotations

from typing import Any

import numpy as np

from torchport.bundle.manifest import Manifest
from torchport.plotting import figure_png, pyplot


def curves_png(records: list[dict[str, Any]]) -> bytes:
    plt = pyplot()
    epochs = [r["epoch"] + 1 for r in records]
    metric = next((k for k in ("val_accuracy", "val_rmse") if k in records[0]), None) if records else None
    figure, axes = plt.subplots(1, 2 if metric else 1, figsize=(10 if metric else 5, 3.5), squeeze=False)
    axes[0][0].plot(epochs, [r["train_loss"] for r in records], label="train loss")
    if "val_loss" in records[0]:
        axes[0][0].plot(epochs, [r["val_loss"] for r in records], label="validation loss")
    axes[0][0].set_xlabel("epoch")
    axes[0][0].legend()
    if metric:
        axes[0][1].plot(epochs, [r[metric] for r in records], color="tab:green")
        axes[0][1].set_xlabel("epoch")
        axes[0][1].set_title(metric.replace("_", " "))
    figure.tight_layout()
    return figure_png(figure)


def parity_errors(manifest: Manifest) -> list[tuple[str, float, float, bool]]:
    """(artifact · runtime, worst max-abs error, atol, passed) for every verification and conformance result.

    Verification compares with PyTorch on validation, random and golden inputs; conformance compares each
    runtime's output on the golden inputs with the golden outputs.
    """
    bars = []
    for result in manifest.verification:
        worst = max((o.max_abs for c in result.checks for o in c.outputs.values()), default=0.0)
        bars.append((f"{result.artifact} · {result.runtime} vs {result.reference}", worst, result.atol, result.passed))
    for outcome in manifest.conformance:
        if outcome.status in ("passed", "failed"):
            worst = max((o.max_abs for o in outcome.outputs.values()), default=0.0)
            label = f"{outcome.artifact} · {outcome.runtime} vs golden"
            bars.append((label, worst, outcome.atol, outcome.status == "passed"))
    return bars


def parity_png(manifest: Manifest) -> bytes | None:
    """Horizontal bars of the worst absolute error per artifact and runtime (log scale), tolerance marked."""
    bars = parity_errors(manifest)
    if not bars:
        return None
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(9, 0.35 * len(bars) + 1.4))
    positions = np.arange(len(bars))
    floor = 1e-9  # an exact match (0.0) still gets a visible bar on the log axis
    errors = [max(error, floor) for _, error, _, _ in bars]
    colours = ["tab:green" if passed else "tab:red" for *_, passed in bars]
    axis.barh(positions, errors, color=colours)
    for position, (_, _, atol, _) in zip(positions, bars, strict=True):
        axis.plot([atol, atol], [position - 0.4, position + 0.4], color="black", linewidth=1)
    axis.set_yticks(positions, [label for label, *_ in bars], fontsize=8)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("worst max |error| (black tick: atol)")
    axis.grid(axis="x", which="both", alpha=0.3)
    axis.set_title(f"{manifest.name}: parity error per artifact and runtime (green passed, red failed)", fontsize=10)
    figure.tight_layout()
    return figure_png(figure)
