"""`torchport bench BUNDLE`: the bundle's model in PyTorch (eager, torch.compile) and each ONNX artifact in ORT."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from torchport.bench import defaults
from torchport.bench.contenders import model_contenders
from torchport.bench.inference import ORT_FP32, BenchResult, bench_contenders
from torchport.bench.peak import count_flops
from torchport.bench.table import bench_table, headline, unstable_lines
from torchport.bundle.manifest import Bundle, read_bundle
from torchport.errors import UsageError


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
    batches: Sequence[int] = defaults.BATCH_SIZES,
    threads: Sequence[int | str] = defaults.SINGLE_THREAD,
    iterations: int = defaults.ITERATIONS,
    budget_s: float = defaults.BUDGET_S,
    compile: bool = defaults.COMPILE,
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


def write_outputs(result: BenchResult, run_dir: Path, json_path: Path | None = None) -> list[Path]:
    from torchport.bench.plots import write_plots

    written = [result.write(run_dir / "bench.json"), *write_plots(result, run_dir)]
    if json_path is not None:
        written.append(result.write(json_path))
    return written


def bench_stage(
    bundle_dir: Path, console: Console | None = None, json_path: Path | None = None, **options: Any
) -> BenchResult:
    """Measure (``options`` as `bench_bundle` takes them), print the ratio table, and write RUN_DIR/bench.json and
    the plots. The report reads those files: refreshing it is the caller's next step, not the benchmark's.
    Quiet without a ``console``."""
    console = console if console is not None else Console(quiet=True)
    result = bench_bundle(bundle_dir, console=console, **options)
    show_bench(result, console)
    written = write_outputs(result, bundle_dir.parent, json_path)
    console.print("wrote " + ", ".join(str(p) for p in written))
    return result


def show_bench(result: BenchResult, console: Console) -> None:
    """What `torchport bench` prints about a result: the ratio table, its notes, the headline."""
    console.print(bench_table(result))
    for note in result.notes:
        console.print(f"[yellow]note[/] {note}")
    for line in unstable_lines(result):
        console.print(f"[yellow]unstable[/] {line}")
    console.print(f"headline (stable cells only): {headline(result)}")
    if not any(m.contender == ORT_FP32 for m in result.measurements):
        console.print("[yellow]note[/] no fp32 ONNX artifact measured; 'vs ORT fp32' is empty")
