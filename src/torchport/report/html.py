"""``RUN_DIR/report.html``: one self-contained page (PNG plots embedded) a user can open or attach anywhere."""

from __future__ import annotations

import base64
import html
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchport.bundle.manifest import Manifest, read_bundle
from torchport.report.figures import curves_png, parity_png

if TYPE_CHECKING:
    from torchport.bench.inference import BenchResult


def _image(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _quote(path: Path) -> str:
    """A path as a shell word: the reproduce commands are meant to be pasted."""
    return shlex.quote(str(path))


def _conformance_command(manifest: Manifest, bundle: Path) -> str:
    """Only the runtimes that ran: naming one that was skipped (its prerequisite missing) would be exit 2."""
    ran = dict.fromkeys(r.runtime for r in manifest.conformance if r.status in ("passed", "failed"))
    return f"torchport conformance {_quote(bundle)}" + (f" --runtimes {','.join(ran)}" if ran else "")


def _reproduce(*commands: str) -> str:
    """The exact commands that remake a figure or table, under it."""
    lines = "<br>".join(f"<code>{html.escape(c)}</code>" for c in commands)
    return f"<p class='small reproduce'>Reproduce: {lines}</p>"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _parity_section(manifest: Manifest, bundle: Path) -> str:
    rows = []
    for result in manifest.verification:
        for check in result.checks:
            for name, out in check.outputs.items():
                verdict = '<span class="pass">pass</span>' if out.passed else '<span class="fail">FAIL</span>'
                agreement = f"{out.argmax_agreement:.4f}" if out.argmax_agreement is not None else "-"
                rows.append(
                    [
                        html.escape(result.artifact),
                        html.escape(result.runtime),
                        html.escape(check.inputs),
                        str(check.batch),
                        html.escape(name),
                        f"{out.max_abs:.2e}",
                        f"{out.max_rel:.2e}",
                        f"{out.needed_atol:.2e}",
                        agreement,
                        verdict,
                    ]
                )
    notes = "".join(
        f"<p class='fail'>{html.escape(r.artifact)}: first diverging layer: {html.escape(r.first_diverging_layer)}</p>"
        for r in manifest.verification
        if r.first_diverging_layer
    )
    tolerances = ", ".join(sorted({f"atol {r.atol:g}, rtol {r.rtol:g}" for r in manifest.verification}))
    headers = [
        "artifact",
        "runtime",
        "inputs",
        "batch",
        "output",
        "max abs",
        "max rel",
        "needed atol",
        "argmax",
        "",
    ]
    png = parity_png(manifest)
    figure = _image(png, "parity error per artifact and runtime") if png else ""
    commands = [f"torchport verify {_quote(bundle)}"]
    if manifest.conformance:  # the figure's "vs golden" bars
        commands.append(_conformance_command(manifest, bundle))
    return (
        f"<h2 id='parity'>Parity</h2><p>Tolerances: {html.escape(tolerances or '-')}</p>{notes}"
        f"{_table(headers, rows)}{figure}{_reproduce(*commands)}"
    )


def _manifest_section(manifest: Manifest) -> str:
    rows = [
        [html.escape(a.path), a.kind, a.precision, f"{a.bytes:,}", f"<code>{a.sha256[:16]}…</code>"]
        for a in manifest.artifacts
    ]
    tensors = [
        [
            ("input" if t in manifest.inputs else "output"),
            html.escape(t.name),
            t.dtype,
            html.escape(str(t.shape)),
        ]
        for t in [*manifest.inputs, *manifest.outputs]
    ]
    labels = html.escape(", ".join(manifest.labels)) or "-"
    origin = manifest.provenance
    return (
        "<h2>Bundle</h2>"
        + _table(["tensor", "name", "dtype", "shape"], tensors)
        + f"<p>Labels: {labels}</p>"
        + _table(["artifact", "kind", "precision", "bytes", "sha256"], rows)
        + f"<p class='small'>torch {origin.torch}, onnx {origin.onnx}, onnxruntime {origin.onnxruntime}, "
        f"config {origin.config_hash}, commit {origin.git_commit or '-'}, created {origin.created}</p>"
    )


def _conformance_section(manifest: Manifest, bundle: Path) -> str:
    """Each runtime's run of the golden inputs (`torchport conformance`), as recorded in the manifest."""
    if not manifest.conformance:
        return ""
    rows = []
    for result in manifest.conformance:
        worst = max((o.max_abs for o in result.outputs.values()), default=0.0)
        batch1 = [lat for lat in result.latency if lat.batch == 1]
        verdict = (
            '<span class="pass">pass</span>'
            if result.status == "passed"
            else f'<span class="fail">{result.status}</span>'
        )
        rows.append(
            [
                html.escape(result.runtime),
                html.escape(f"{result.engine} {result.version}".strip()),
                html.escape(result.artifact),
                f"{worst:.2e}",
                f"{batch1[0].median_ms:.3f} ms" if batch1 else "-",
                verdict + (f" {html.escape(result.reason)}" if result.reason else ""),
            ]
        )
    headers = ["runtime", "engine", "artifact", "max abs vs golden", "latency, batch 1", ""]
    command = _conformance_command(manifest, bundle)
    return f"<h2 id='conformance'>Conformance</h2>{_table(headers, rows)}{_reproduce(command)}"


def _variants_section(manifest: Manifest, bundle: Path) -> str:
    """Size, accuracy against fp32 and batch-1 latency of every artifact, and why a variant was left out."""
    if not manifest.variants:
        return ""
    fp32_bytes = next((a.bytes for a in manifest.artifacts if a.kind == "onnx" and a.precision == "fp32"), 0)
    rows = []
    for artifact in manifest.artifacts:
        if artifact.kind == "aoti":
            continue
        batch1 = [lat for lat in artifact.latency if lat.batch == 1 and lat.threads == 1]
        accuracy = artifact.accuracy
        rows.append(
            [
                html.escape(artifact.path),
                artifact.precision,
                f"{artifact.bytes / 1024:.1f} KiB",
                f"{fp32_bytes / artifact.bytes:.2f}×" if artifact.bytes else "-",
                f"{accuracy.metric} {accuracy.value:.4f} (fp32 {accuracy.reference:.4f})" if accuracy else "-",
                f"{batch1[0].median_ms:.3f} ms" if batch1 else "-",
            ]
        )
    left_out = "".join(
        f"<p class='fail'>{html.escape(v.status)} {html.escape(v.path)}: {html.escape(v.reason)}</p>"
        for v in manifest.variants
        if v.status != "kept"
    )
    headers = ["artifact", "precision", "size", "smaller than fp32", "accuracy", "median latency, batch 1, 1 thread"]
    command = f"torchport optimize {_quote(bundle)}"
    return f"<h2 id='variants'>Variants</h2>{left_out}{_table(headers, rows)}{_reproduce(command)}"


def _plot(written: Path, draw: Callable[[BenchResult], bytes], result: BenchResult) -> bytes:
    """The PNG `torchport bench` wrote beside bench.json, or drawn from it when it is not there."""
    return written.read_bytes() if written.is_file() else draw(result)


def _bench_section(run_dir: Path) -> str:
    """The ratio table and plots of ``RUN_DIR/bench.json`` (written by `torchport bench`); the plots are re-drawn."""
    from torchport.bench.bundle import HEADERS, flops_line, headline, table_rows, unstable_lines
    from torchport.bench.inference import read_result
    from torchport.bench.plots import LATENCY_PNG, THROUGHPUT_PNG, latency_png, throughput_png

    result = read_result(run_dir / "bench.json")

    def ratio(value: float | None) -> str:
        if value is None:
            return "-"
        return f"<span class='{'pass' if value >= 1 else 'fail'}'>{value:.2f}×</span>"

    rows = table_rows(result, ratio, text=html.escape)
    notes = "".join(f"<p class='fail'>{html.escape(note)}</p>" for note in result.notes)
    notes += "".join(f"<p class='fail'>unstable: {html.escape(line)}</p>" for line in unstable_lines(result))
    # the figures a reader takes away: from stable rows only (bench/stability.py says what stable means)
    summary = f"<p id='bench-headline'><b>Headline (stable cells only):</b> {html.escape(headline(result))}</p>"
    flops = flops_line(result)
    threads = ",".join(str(t) for t in result.threads)
    batches = ",".join(str(b) for b in result.batches)
    command = f"torchport bench {_quote(run_dir / 'bundle')} --batch-sizes {batches} --threads {threads}"
    if result.iterations is not None and result.budget_s is not None:
        command += f" --iterations {result.iterations} --budget {result.budget_s:g}"
    compiled = any(m.contender == "torch.compile" for m in result.measurements)
    if not compiled and not any(note.startswith("torch.compile") for note in result.notes):
        command += " --no-compile"
    return (
        f"<h2 id='benchmark'>Inference benchmark</h2><p class='small'>{html.escape(result.machine)}. Ratios &gt; 1 "
        "are faster than the reference, measured in the same run with the contenders interleaved.</p>"
        + summary
        + (f"<p class='small'>{html.escape(flops)}</p>" if flops else "")
        + f"{notes}{_table(HEADERS, rows)}"
        + _image(_plot(run_dir / LATENCY_PNG, latency_png, result), "latency by batch size")
        + _image(_plot(run_dir / THROUGHPUT_PNG, throughput_png, result), "throughput")
        + _reproduce(command)
    )


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}
th{background:#f3f3f3}.pass{color:#17803d;font-weight:600}.fail{color:#c0392b;font-weight:700}
.small{font-size:12px;color:#666}img{max-width:100%;height:auto}"""


def _summary_section(run_dir: Path, summary: dict[str, Any]) -> str:
    best = summary.get("best", {})
    metric = summary.get("metric", "")
    return (
        f"<h1>torchport report: {html.escape(summary['name'])}</h1>"
        f"<p id='summary'>{summary['task']}; best {html.escape(metric)} {best.get(metric, float('nan')):.4f} at epoch "
        f"{best.get('epoch', 0) + 1} of {summary['epochs']}; {summary['samples_per_second']} samples/s; "
        f"{summary['parameters']:,} parameters.</p>"
        + _reproduce(f"torchport run {_quote(run_dir / 'config.yaml')} --run-dir {_quote(run_dir)}  # the whole page")
    )


def _training_section(run_dir: Path) -> str:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if not records:
        return ""
    return (
        "<h2 id='training'>Training</h2>"
        + _image(curves_png(records), "training curves")
        + _reproduce(f"torchport train {_quote(run_dir / 'config.yaml')} --run-dir {_quote(run_dir)}")
    )


def write_report(run_dir: Path) -> Path:
    summary = json.loads((run_dir / "summary.json").read_text())
    sections = [_summary_section(run_dir, summary), _training_section(run_dir)]
    bundle = run_dir / "bundle"
    if (bundle / "manifest.json").is_file():
        manifest = read_bundle(bundle).manifest
        sections.append(_parity_section(manifest, bundle))
        sections.append(_variants_section(manifest, bundle))
        sections.append(_conformance_section(manifest, bundle))
        sections.append(_manifest_section(manifest))
    if (run_dir / "bench.json").is_file():
        sections.append(_bench_section(run_dir))
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>torchport {html.escape(summary['name'])}</title>"
    page += f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    path = run_dir / "report.html"
    path.write_text(page)
    return path
