"""Text from the run reaches report.html as text, never as markup: the page is rendered with autoescape on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchport.report.html import refresh_report, write_report

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _rewrite(path: Path, **changes: Any) -> None:
    """Change top-level fields of a JSON file the report reads, as a hand (or a tool) might have."""
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_class_label_with_markup_is_shown_escaped(digits_run: Path) -> None:
    manifest = digits_run / "bundle" / "manifest.json"
    _rewrite(manifest, labels=[SCRIPT, *json.loads(manifest.read_text())["labels"][1:]])
    page = write_report(digits_run).read_text()
    assert f"Labels: {ESCAPED}, 1, 2" in page
    assert "<script>alert(1)" not in page


def test_names_from_the_summary_and_bench_json_are_shown_escaped(digits_run: Path) -> None:
    _rewrite(digits_run / "summary.json", task=SCRIPT)
    row = {
        "contender": SCRIPT,
        "runtime": "fake",
        "artifact": None,
        "batch": 1,
        "threads": 1,
        "median_ms": 1.0,
        "p99_ms": 1.1,
        "throughput": 1000.0,
        "iterations": 5,
        "prepare_s": 0.0,
    }
    bench = {"subject": "digits", "machine": SCRIPT, "batches": [1], "threads": [1], "measurements": [row]}
    (digits_run / "bench.json").write_text(json.dumps({**bench, "notes": [f"{SCRIPT} failed"]}))
    page = write_report(digits_run).read_text()
    assert "<script>" not in page
    assert f"<p id='summary'>{ESCAPED}; best" in page  # the task, once written into the page as it came
    assert f"<td>{ESCAPED}</td>" in page  # the contender's name in the ratio table
    assert f"<p class='small'>{ESCAPED}. Ratios" in page and f"<p class='fail'>{ESCAPED} failed</p>" in page


def test_refresh_rewrites_only_a_report_that_exists(digits_run: Path) -> None:
    assert refresh_report(digits_run) is None and not (digits_run / "report.html").exists()
    written = write_report(digits_run)
    written.write_text("stale")
    assert refresh_report(digits_run) == written and written.read_text().startswith("<!doctype html>")
