"""`torchport bench BUNDLE`: the bundle's model in PyTorch (eager, torch.compile) and each ONNX artifact in ORT."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from torchport.bench.contenders import model_contenders
from torchport.bench.inference import EAGER, ORT_FP32, BenchResult, bench_contenders
from torchport.bundle.manifest import Bundle, read_bundle
from torchport.errors import UsageError

BATCHES = (1, 64)


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
    threads: Sequence[int] = (1,),
    iterations: int = 100,
    budget_s: float = 2.0,
    compile: bool = True,
    console: Console | None = None,
) -> BenchResult:
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
    progress = (lambda text: console.log(text)) if console is not None else (lambda _: None)
    return bench_contenders(
        bundle.manifest.name,
        contenders,
        bundle_inputs(bundle, batches),
        threads,
        iterations=iterations,
        budget_s=budget_s,
        progress=progress,
    )


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    colour = "green" if value >= 1.0 else "red"
    return f"[{colour}]{value:.2f}×[/]"


def bench_table(result: BenchResult) -> Table:
    table = Table(title=f"inference benchmark: {result.subject}", caption=result.machine)
    for header in ("batch", "threads", "contender", "median ms", "p99 ms", "samples/s", "vs eager", "vs ORT fp32"):
        table.add_column(header, justify="left" if header == "contender" else "right")
    table.add_column("max |Δ| vs eager", justify="right")
    table.add_column("argmax = eager", justify="right")
    for m in result.measurements:
        diff = "-" if m.max_abs_diff is None else ("ref" if m.contender == EAGER else f"{m.max_abs_diff:.1e}")
        table.add_row(
            str(m.batch),
            str(m.threads),
            m.contender,
            f"{m.median_ms:.3f}",
            f"{m.p99_ms:.3f}",
            f"{m.throughput:,.0f}",
            _ratio(m.vs_eager),
            _ratio(m.vs_ort_fp32),
            diff,
            "-" if m.argmax_agreement is None else f"{m.argmax_agreement:.1%}",
        )
    return table


def write_outputs(result: BenchResult, run_dir: Path, json_path: Path | None = None) -> list[Path]:
    from torchport.bench.plots import write_plot

    written = [result.write(run_dir / "bench.json"), write_plot(result, run_dir / "bench.png")]
    if json_path is not None:
        written.append(result.write(json_path))
    return written


def bench_stage(
    bundle_dir: Path,
    console: Console,
    batches: Sequence[int] = BATCHES,
    threads: Sequence[int] = (1,),
    iterations: int = 100,
    budget_s: float = 2.0,
    compile: bool = True,
    json_path: Path | None = None,
) -> BenchResult:
    """Measure, print the ratio table, write RUN_DIR/bench.json and bench.png, and refresh an existing report."""
    result = bench_bundle(bundle_dir, batches, threads, iterations, budget_s, compile, console)
    console.print(bench_table(result))
    for note in result.notes:
        console.print(f"[yellow]note[/] {note}")
    if not any(m.contender == ORT_FP32 for m in result.measurements):
        console.print("[yellow]note[/] no fp32 ONNX artifact measured; 'vs ORT fp32' is empty")
    run_dir = bundle_dir.parent
    written = write_outputs(result, run_dir, json_path)
    if (run_dir / "report.html").is_file() and (run_dir / "summary.json").is_file():
        from torchport.report.html import write_report

        written.append(write_report(run_dir))
    console.print("wrote " + ", ".join(str(p) for p in written))
    return result
