"""`torchport bench BUNDLE`: the bundle's model in PyTorch (eager, torch.compile) and each ONNX artifact in ORT."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from torchport.bench.contenders import model_contenders
from torchport.bench.inference import EAGER, ORT_FP32, BenchResult, Measurement, bench_contenders
from torchport.bench.peak import count_flops
from torchport.bundle.manifest import Bundle, read_bundle
from torchport.errors import UsageError

BATCHES = (1, 8, 64)


def resolve_threads(values: Sequence[int | str]) -> list[int]:
    """``[1, "all"]`` -> ``[1, cores]``: "all" is every CPU this process may run on; duplicates dropped, in order."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    resolved = [cpus if value == "all" else int(value) for value in values]
    return list(dict.fromkeys(resolved))


def bundle_inputs(bundle: Bundle, batches: Sequence[int]) -> dict[int, np.ndarray]:
    """The golden (validation) inputs, repeated to fill each batch: real data, the same for every contender."""
    golden = bundle.read_tensor(bundle.manifest.golden.inputs[0])
    return {batch: np.ascontiguousarray(golden[np.arange(batch) % len(golden)]) for batch in batches}


def bundle_onnx(bundle: Bundle) -> dict[str, Path]:
    """``fp32`` and each ONNX variant (optimized, int8, fp16, ort) by name, checksums verified."""
    paths: dict[str, Path] = {}
    for artifact in bundle.manifest.artifacts:
        if artifact.kind not in ("onnx", "ort"):
            continue
        name = artifact.variant or artifact.precision
        paths[name] = bundle.verified_path(artifact)
    return paths


def bench_bundle(
    bundle_dir: Path,
    batches: Sequence[int] = BATCHES,
    threads: Sequence[int | str] = (1,),
    iterations: int = 100,
    budget_s: float = 2.0,
    compile: bool = True,
    console: Console | None = None,
    total_budget_s: float | None = None,
) -> BenchResult:
    """``threads`` may say "all"; ``budget_s`` is per contender and cell; ``total_budget_s``, when given, is shared
    out over them instead."""
    from torchport.export.deployable import load_trained_run

    bundle = read_bundle(bundle_dir)
    run_dir = bundle_dir.parent
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(
            f"{bundle_dir}: bench needs the run directory around the bundle (its config.yaml and checkpoint) to "
            "run the model in PyTorch"
        )
    run = load_trained_run(run_dir, bundle.manifest.provenance.checkpoint)
    pt2 = next((a for a in bundle.manifest.artifacts if a.kind == "aoti"), None)
    aoti = bundle.verified_path(pt2) if pt2 is not None else None
    contenders = model_contenders(run.module, bundle_onnx(bundle), compile=compile, aoti=aoti)
    counts = resolve_threads(threads)
    if total_budget_s is not None:
        budget_s = total_budget_s / max(1, len(batches) * len(counts) * len(contenders))
    progress = (lambda text: console.log(text)) if console is not None else (lambda _: None)
    return bench_contenders(
        bundle.manifest.name,
        contenders,
        bundle_inputs(bundle, batches),
        counts,
        iterations=iterations,
        budget_s=budget_s,
        progress=progress,
        flop_counter=lambda array: count_flops(run.module, array),
    )


HEADERS = ["batch", "threads", "contender", "median ms", "p99 ms", "samples/s", "vs eager", "vs ORT fp32"]
HEADERS += ["GFLOP/s", "of peak", "max |Δ| vs eager", "argmax = eager"]


def table_rows(
    result: BenchResult, ratio: Callable[[float | None], str], text: Callable[[str], str] = str
) -> list[list[str]]:
    """The cells of the ratio table under ``HEADERS``, shared by the terminal and the report: ``ratio`` styles the
    ratios, ``text`` escapes the contender's name (HTML). An unstable row shows "unstable" where its ratios would
    be, and a row compared with an unstable reference "ref unstable", whatever ratio the JSON holds."""
    rows = []
    for m in result.measurements:
        diff = "-" if m.max_abs_diff is None else ("ref" if m.contender == EAGER else f"{m.max_abs_diff:.1e}")
        rows.append(
            [
                str(m.batch),
                str(m.threads),
                text(m.contender) + ("" if m.stable else " (unstable)"),
                f"{m.median_ms:.3f}",
                f"{m.p99_ms:.3f}",
                f"{m.throughput:,.0f}",
                _ratio_cell(result, m, EAGER, m.vs_eager, ratio),
                _ratio_cell(result, m, ORT_FP32, m.vs_ort_fp32, ratio),
                "-" if m.gflops is None else f"{m.gflops:.1f}",
                "-" if m.peak_fraction is None else f"{m.peak_fraction:.0%}",
                diff,
                "-" if m.argmax_agreement is None else f"{m.argmax_agreement:.1%}",
            ]
        )
    return rows


def _row(result: BenchResult, contender: str, batch: int, threads: int) -> Measurement | None:
    return next(
        (m for m in result.measurements if (m.contender, m.batch, m.threads) == (contender, batch, threads)), None
    )


def quotable(result: BenchResult, m: Measurement, reference: str) -> bool:
    """Whether a ratio of ``m`` to ``reference`` (in the same cell) may be quoted: both rows stable."""
    other = _row(result, reference, m.batch, m.threads)
    return m.stable and (other is None or other.stable)


def _ratio_cell(
    result: BenchResult, m: Measurement, reference: str, value: float | None, ratio: Callable[[float | None], str]
) -> str:
    if not m.stable:
        return "unstable"
    if not quotable(result, m, reference):
        return "ref unstable"
    return ratio(value)


def unstable_lines(result: BenchResult) -> list[str]:
    """One line per row that stayed unstable after measuring it again: which, where, and why."""
    return [
        f"{m.contender} at batch {m.batch}, {m.threads} thread(s): {'; '.join(m.unstable_because) or 'unstable'}"
        for m in result.measurements
        if not m.stable
    ]


def headline(result: BenchResult) -> str:
    """The figures worth quoting, from stable rows only: per batch size and thread count, the fastest contender
    against eager, and how many rows were left unquoted."""
    quotes = []
    for threads in result.threads:
        for batch in result.batches:
            candidates = [
                m
                for m in result.measurements
                if (m.batch, m.threads) == (batch, threads)
                and m.contender != EAGER
                and m.vs_eager is not None
                and quotable(result, m, EAGER)
            ]
            if candidates:
                best = max(candidates, key=lambda m: m.vs_eager or 0.0)
                quotes.append(f"{best.contender} {best.vs_eager:.2f}× eager at batch {batch}, {threads} thread(s)")
    text = "; ".join(quotes) if quotes else "no stable cell to quote"
    unstable = sum(not m.stable for m in result.measurements)
    if unstable:
        text += (
            f". {unstable} of {len(result.measurements)} cells unstable even when measured again: "
            "marked in the table, no ratio given for them"
        )
    return text


def _rich_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    colour = "green" if value >= 1.0 else "red"
    return f"[{colour}]{value:.2f}×[/]"


def flops_line(result: BenchResult) -> str | None:
    """How GFLOP/s and the fraction of peak were computed, for the table's caption and the report."""
    if not result.flops or result.peak is None:
        return None
    per_sample = min(result.flops.items())[1] / min(result.flops)
    line = f"{per_sample / 1e6:,.2f} MFLOP per sample (torch.utils.flop_counter); {result.peak['derivation']}"
    line += ". INT8/FP16 rows: effective GFLOP/s (the model's FLOPs over the time), not compared with the FP32 peak"
    if any((m.peak_fraction or 0) > 1 for m in result.measurements):
        line += "; a fraction over 100% means the clock runs above the one read (boost), not a miscount"
    return line


def bench_table(result: BenchResult) -> Table:
    caption = "\n".join(filter(None, [result.machine, flops_line(result)]))
    table = Table(title=f"inference benchmark: {result.subject}", caption=caption)
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "contender" else "right")
    for row in table_rows(result, _rich_ratio):
        table.add_row(*row)
    return table


def write_outputs(result: BenchResult, run_dir: Path, json_path: Path | None = None) -> list[Path]:
    from torchport.bench.plots import write_plots

    written = [result.write(run_dir / "bench.json"), *write_plots(result, run_dir)]
    if json_path is not None:
        written.append(result.write(json_path))
    return written


def bench_stage(bundle_dir: Path, console: Console, json_path: Path | None = None, **options: Any) -> BenchResult:
    """Measure (``options`` as `bench_bundle` takes them), print the ratio table, write RUN_DIR/bench.json and the
    plots, and refresh an existing report."""
    result = bench_bundle(bundle_dir, console=console, **options)
    console.print(bench_table(result))
    for note in result.notes:
        console.print(f"[yellow]note[/] {note}")
    for line in unstable_lines(result):
        console.print(f"[yellow]unstable[/] {line}")
    console.print(f"headline (stable cells only): {headline(result)}")
    if not any(m.contender == ORT_FP32 for m in result.measurements):
        console.print("[yellow]note[/] no fp32 ONNX artifact measured; 'vs ORT fp32' is empty")
    run_dir = bundle_dir.parent
    written = write_outputs(result, run_dir, json_path)
    if (run_dir / "report.html").is_file() and (run_dir / "summary.json").is_file():
        from torchport.report.html import write_report

        written.append(write_report(run_dir))
    console.print("wrote " + ", ".join(str(p) for p in written))
    return result
