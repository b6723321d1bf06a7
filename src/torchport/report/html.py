"""``RUN_DIR/report.html``: one self-contained page (PNG plots embedded) a user can open or attach anywhere.

The page is rendered from the Jinja2 templates under templates/ with autoescaping on: every value that comes from
the summary, the metrics, the manifest or bench.json is escaped by the template engine, so a class label or a name
such as ``<script>`` is shown as text. The Python side only gathers the views (report/view.py says what they hold).
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from torchport.bundle.manifest import Manifest, read_bundle
from torchport.report.benchmark import bench_view
from torchport.report.figures import curves_png
from torchport.report.sections import bundle_view, conformance_view, parity_view, variants_view
from torchport.report.view import Mark, shell_word


@dataclass(frozen=True)
class SummaryView:
    name: str
    task: str
    metric: str
    best: str
    epoch: int
    epochs: int
    samples_per_second: str
    parameters: str
    test: list[tuple[str, str]]  # (test_accuracy, "0.9722"): the exported checkpoint on the test split
    test_checkpoint: str
    stopped_early: str  # "" or a sentence: when and why training stopped before train.epochs
    reproduce: list[str]


@dataclass(frozen=True)
class TrainingView:
    curves: bytes
    reproduce: list[str]


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("torchport.report", "templates"),
        autoescape=True,  # every template makes HTML, whatever its file name says
        undefined=jinja2.StrictUndefined,  # a misspelt field is an error here, not an empty cell in the page
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["base64"] = lambda data: base64.b64encode(data).decode()
    environment.tests["mark"] = lambda value: isinstance(value, Mark)
    return environment


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)


def _summary_view(run_dir: Path, summary: dict[str, Any]) -> SummaryView:
    best = summary.get("best", {})
    metric = summary.get("metric", "")
    whole_run = f"torchport run {shell_word(run_dir / 'config.yaml')} --run-dir {shell_word(run_dir)}  # the whole page"
    return SummaryView(
        name=summary["name"],
        task=summary["task"],
        metric=metric,
        best=f"{best.get(metric, float('nan')):.4f}",
        epoch=best.get("epoch", 0) + 1,
        epochs=summary["epochs"],
        samples_per_second=str(summary["samples_per_second"]),
        parameters=f"{summary['parameters']:,}",
        test=[(name, f"{value:.4f}") for name, value in summary.get("test", {}).items()],
        test_checkpoint=str(summary.get("test_checkpoint", "")),
        stopped_early=_stopped_early(summary.get("early_stopping")),
        reproduce=[whole_run],
    )


def _stopped_early(stopping: dict[str, Any] | None) -> str:
    if not stopping or not stopping.get("stopped"):
        return ""
    return (
        f"stopped early after epoch {stopping['stopped_epoch'] + 1}: {stopping['metric']} did not improve"
        f" for {stopping['patience']} epoch(s)"
    )


def _training_view(run_dir: Path) -> TrainingView | None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if not records:
        return None
    command = f"torchport train {shell_word(run_dir / 'config.yaml')} --run-dir {shell_word(run_dir)}"
    return TrainingView(curves_png(records), [command])


def _conformance_section(manifest: Manifest, bundle: Path) -> str:
    """The conformance section alone, as it appears in the page ("" when no runtime has run)."""
    return render("conformance.html.j2", conformance=conformance_view(manifest, bundle))


def _bundle_sections(run_dir: Path) -> dict[str, Any]:
    """The sections read from RUN_DIR/bundle/manifest.json; none of them when there is no bundle yet."""
    bundle = run_dir / "bundle"
    if not (bundle / "manifest.json").is_file():
        return {"parity": None, "variants": None, "conformance": None, "bundle": None}
    manifest = read_bundle(bundle).manifest
    return {
        "parity": parity_view(manifest, bundle),
        "variants": variants_view(manifest, bundle),
        "conformance": conformance_view(manifest, bundle),
        "bundle": bundle_view(manifest),
    }


def write_report(run_dir: Path) -> Path:
    summary = json.loads((run_dir / "summary.json").read_text())
    page = render(
        "report.html.j2",
        summary=_summary_view(run_dir, summary),
        training=_training_view(run_dir),
        **_bundle_sections(run_dir),
        bench=bench_view(run_dir),
    )
    path = run_dir / "report.html"
    path.write_text(page)
    return path


def refresh_report(run_dir: Path) -> Path | None:
    """Rewrite RUN_DIR/report.html if the run already has one (and the summary it is made from), so that a
    `torchport bench` after `torchport run` shows its new numbers; None when there is no report to refresh."""
    if (run_dir / "report.html").is_file() and (run_dir / "summary.json").is_file():
        return write_report(run_dir)
    return None
