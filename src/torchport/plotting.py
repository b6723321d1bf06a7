"""Matplotlib without a display, and a figure as PNG bytes: the one place both the benchmark's plots and the
report's figures draw through.

It sits low (it imports nothing of torchport) so that neither of its users has to import the other for it, and
matplotlib is imported on first use, not with this module, so ``torchport --help`` does not pay for it.
"""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: plots are written to files on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(figure: Any, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, and the figure closed: pyplot keeps every open figure alive until then."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(figure)
    return buffer.getvalue()
