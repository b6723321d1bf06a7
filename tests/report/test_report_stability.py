"""The report's benchmark section (finding 10): unstable cells are marked, and the headline quotes stable ones only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchport.report.html import write_report


def _row(name: str, batch: int, ms: float, vs_eager: float, stable: bool = True) -> dict[str, Any]:
    return {
        "contender": name,
        "runtime": "fake",
        "artifact": None,
        "batch": batch,
        "threads": 2,
        "median_ms": ms,
        "p99_ms": ms * (3.3 if not stable else 1.2),
        "throughput": batch / ms * 1e3,
        "iterations": 20,
        "prepare_s": 0.0,
        "vs_eager": vs_eager,
        "stable": stable,
        "unstable_because": [] if stable else ["p99 3.3× the median"],
    }


def test_unstable_cells_are_marked_and_left_out_of_the_headline(digits_run: Path) -> None:
    rows = [
        _row("pytorch eager", 1, 20.4, 1.0, stable=False),  # the 59.53× came from a row like this one
        _row("ort fp32", 1, 0.3427, 59.53),
        _row("pytorch eager", 64, 4.0, 1.0),
        _row("ort fp32", 64, 2.0, 2.0),
        _row("ort int8", 64, 1.6, 2.5, stable=False),
    ]
    bench = {"subject": "digits", "machine": "m", "batches": [1, 64], "threads": [2], "measurements": rows}
    (digits_run / "bench.json").write_text(json.dumps(bench))
    page = write_report(digits_run).read_text()
    assert "59.53" not in page and "2.50×" not in page
    assert page.count(">unstable<") >= 2
    assert "pytorch eager at batch 1, 2 thread(s): p99 3.3× the median" in page
    headline = page[page.index("id='bench-headline'") :].split("</p>", 1)[0]
    assert "ort fp32 2.00× eager at batch 64, 2 thread(s)" in headline
    assert "batch 1" not in headline and "int8" not in headline
    assert "2 of 5 cells unstable" in headline
