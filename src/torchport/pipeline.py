"""The stages after training, and ``run`` which chains them all.

Each stage reads what the previous one wrote into the run directory: export reads ``config.yaml`` and a
checkpoint, verify reads the bundle (and the run's checkpoint for the PyTorch reference), the report reads
everything. Nothing passes between stages in memory, so a user can enter at any verb.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from torchport.bundle.build import (
    artifact_entry,
    fresh_bundle_dir,
    provenance,
    write_golden,
    write_manifest,
)
from torchport.bundle.inspect import variants_table
from torchport.bundle.manifest import Artifact, Bundle, VariantOutcome, read_bundle
from torchport.config import BenchConfig, Config
from torchport.data import DataSplits, load_data
from torchport.errors import ConfigError, first_line
from torchport.export.deployable import TrainedRun, load_trained_run
from torchport.models.compose import build_model
from torchport.progress import working
from torchport.verify.bundle import VerifyReport, verify_report
from torchport.verify.variants import open_run_bundle, optimize_bundle


def dry_build(config: Config) -> str:
    """Load the data and build the model once: what `validate` checks beyond the config's types."""
    from torchport.models.spec import model_meta, model_spec

    data = load_data(config.data, config.seed)
    model = build_model(model_spec(config, model_meta(data)))
    parameters = sum(p.numel() for p in model.parameters())
    return f"{tuple(data.input_shape)} -> ({data.num_outputs},), {parameters:,} parameters, {data.task}"


# --- export --------------------------------------------------------------------------------------------------


def _quiet(console: Console | None) -> Console:
    """The console a stage prints on: the caller's (the CLI's), else one that prints nothing."""
    return console if console is not None else Console(quiet=True)


def export_stage(run_dir: Path, console: Console | None = None) -> Bundle:
    """Export ONNX (and the AOTInductor package when a compiler is there) and write the bundle."""
    console = _quiet(console)
    run = load_trained_run(run_dir)
    bundle_dir = fresh_bundle_dir(run_dir)
    artifacts = [_export_onnx(run, bundle_dir, console)]
    pt2 = _export_aoti(run, bundle_dir, console)
    if pt2 is not None:
        artifacts.append(pt2)
    data = load_data(run.config.data, run.config.seed)
    golden = write_golden(bundle_dir, run, data.val.x[: run.config.export.golden_samples])
    bundle = write_manifest(bundle_dir, run, artifacts, golden, _validation_metrics(run, data))
    install_runners(bundle_dir)
    console.print(f"bundle written to {bundle_dir}")
    return bundle


def _export_onnx(run: TrainedRun, bundle_dir: Path, console: Console) -> Artifact:
    from torchport.export.onnx import export_onnx

    started = time.perf_counter()
    metadata = {k: str(v) for k, v in provenance(run).model_dump().items()}
    with working(console, "exporting ONNX"):
        onnx_path = export_onnx(run, bundle_dir / "model.onnx", metadata)
    console.print(f"exported {onnx_path} ({onnx_path.stat().st_size:,} bytes) in {time.perf_counter() - started:.1f} s")
    return artifact_entry(bundle_dir, onnx_path, "onnx", "onnxruntime", run.config.export.opset)


def _export_aoti(run: TrainedRun, bundle_dir: Path, console: Console) -> Artifact | None:
    """model.pt2 when ``export.aoti`` allows it and a C++ compiler is there; an error only when it was demanded."""
    from torchport.export.aoti import export_aoti, find_cxx

    aoti_setting = run.config.export.aoti
    compiler = find_cxx()
    if aoti_setting is False:
        console.print("skipped model.pt2: export.aoti is false")
        return None
    if compiler is None:
        if aoti_setting is True:
            raise ConfigError("export.aoti: true, but no C++ compiler (g++, c++, clang++ or $CXX) was found")
        console.print("[yellow]skipped model.pt2:[/] no C++ compiler found (install g++ to build the C++ package)")
        return None
    started = time.perf_counter()
    with working(console, "exporting and compiling model.pt2 (AOTInductor)"):
        pt2_path = export_aoti(run, bundle_dir / "model.pt2")
    console.print(f"exported {pt2_path} ({pt2_path.stat().st_size:,} bytes) in {time.perf_counter() - started:.1f} s")
    return artifact_entry(bundle_dir, pt2_path, "aoti", "torch.aoti")


def _validation_metrics(run: TrainedRun, data: DataSplits) -> dict[str, float | None]:
    """The exported checkpoint's validation metrics (``val_*``) and, when there is a test split, its test metrics
    (``test_*``): recorded in the manifest as the numbers the bundle ships with."""
    from torchport.train.evaluation import evaluate, prefixed
    from torchport.train.tasks import make_task

    task = make_task(run.config.train, data)
    device = torch.device("cpu")
    metrics: dict[str, float | None] = {}
    for prefix, split in (("val", data.val), ("test", data.test)):
        metrics.update(prefixed(evaluate(run.module.model, split, task, 256, device), prefix))
    return metrics


def install_runners(bundle_dir: Path) -> None:
    """Ship every runtime's standalone runner under ``bundle/runners/`` and every v2 client under
    ``bundle/clients/`` (each with its README), ready to copy."""
    from torchport.registry import CLIENTS, RUNTIMES
    from torchport.runtimes.base import install_files

    for runtime in [*map(RUNTIMES.get, RUNTIMES.names()), *map(CLIENTS.get, CLIENTS.names())]:
        install_files(runtime, bundle_dir)


# --- verify --------------------------------------------------------------------------------------------------


def verify_stage(bundle_dir: Path, console: Console | None = None) -> bool:
    """Verify every artifact of the bundle, record the results in its manifest, print the parity table and one
    line per failure; True when all pass."""
    report = verify_report(bundle_dir, save=True)
    show_verification(report, _quiet(console))
    return report.passed


def show_verification(report: VerifyReport, console: Console) -> None:
    """What `torchport verify` prints: the parity table, a line per failure, the verdict."""
    console.print(report.table())
    for line in report.failures():
        console.print(f"[bold red]FAILED[/] {line}")
    verdict = "[green]verified[/]" if report.passed else "[bold red]verification failed[/]"
    console.print(f"{verdict} {len(report.results)} artifact(s) in {report.seconds:.1f} s")


# --- optimize ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizeReport:
    """What `optimize` did with each variant of ``export.variants``: kept, or refused or failed and why.

    ``passed`` is false only when a variant was left out under ``export.strict_variants: true``."""

    outcomes: list[VariantOutcome]
    passed: bool

    @property
    def kept(self) -> list[str]:
        return [o.path for o in self.outcomes if o.status == "kept"]

    @property
    def left_out(self) -> list[VariantOutcome]:
        return [o for o in self.outcomes if o.status != "kept"]


def optimize_stage(bundle_dir: Path, console: Console | None = None) -> bool:
    """Add the variants in ``export.variants`` to a bundle, each gated on accuracy (and fp32 ones on parity).

    A refused or failed variant is left out and named in one line; it fails the stage only with
    ``export.strict_variants: true``. Needs the run directory around the bundle: calibration and the gate use
    its data.
    """
    return optimize_report(bundle_dir, console).passed


def optimize_report(bundle_dir: Path, console: Console | None = None) -> OptimizeReport:
    """:func:`optimize_stage`, returning what happened to each variant."""
    console = _quiet(console)
    started = time.perf_counter()
    target = open_run_bundle(bundle_dir)
    settings = target.config.export
    if not settings.variants:
        console.print("no variants requested (export.variants is empty)")
        return OptimizeReport([], True)
    outcomes = optimize_bundle(target, console.print, console=console)
    console.print(variants_table(target.bundle.manifest))
    report = OptimizeReport(outcomes, not ([o for o in outcomes if o.status != "kept"] and settings.strict_variants))
    left_out = [o.path for o in report.left_out]  # variants_table above gives the reasons
    verdict = (
        "[green]optimized[/]"
        if not left_out
        else ("[bold red]optimize failed[/]" if not report.passed else "[yellow]optimized[/]")
    )
    console.print(
        f"{verdict} {len(report.kept)} of {len(outcomes)} variant(s) kept in {time.perf_counter() - started:.1f} s"
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
    )
    return report


# --- run -----------------------------------------------------------------------------------------------------


def bench_run_stage(run_dir: Path, settings: BenchConfig, console: Console | None = None) -> None:
    """The short benchmark at the end of `torchport run`: ``bench.budget_seconds`` of timed calls in all."""
    from torchport.bench.bundle import bench_stage

    bench_stage(
        run_dir / "bundle",
        console,
        batches=settings.batch_sizes,
        threads=settings.threads,
        compile=settings.compile,
        total_budget_s=settings.budget_seconds,
    )


def run_pipeline(config: Config, run_dir: Path | None, console: Console | None = None, overwrite: bool = False) -> bool:
    """train -> export -> verify -> bundle -> report, with a closing summary table. ``overwrite``: start over in
    a run dir that holds an earlier run's checkpoints (refused otherwise)."""
    from torchport.config import default_run_dir
    from torchport.report.html import write_report
    from torchport.train.loop import train

    console = _quiet(console)
    run_dir = Path(run_dir or default_run_dir(config))
    times: dict[str, float] = {}

    def timed(stage: str, start: float) -> None:
        times[stage] = time.perf_counter() - start

    start = time.perf_counter()
    summary = train(config, run_dir, console=console, overwrite=overwrite)
    timed("train", start)
    start = time.perf_counter()
    export_stage(run_dir, console)
    timed("export", start)
    start = time.perf_counter()
    passed = verify_stage(run_dir / "bundle", console)
    timed("verify", start)
    if config.export.variants and passed:
        start = time.perf_counter()
        passed = optimize_stage(run_dir / "bundle", console)
        timed("optimize", start)
    elif config.export.variants:
        console.print("[yellow]skipped optimize:[/] model.onnx failed verification, so no variant is made from it")
    if config.bench.budget_seconds > 0 and passed:
        start = time.perf_counter()
        try:
            bench_run_stage(run_dir, config.bench, console)
        except Exception as exc:  # the benchmark is the optional last stage: the report and summary still come
            console.print(f"[yellow]skipped the benchmark:[/] {type(exc).__name__}: {first_line(exc)[:200]}")
        timed("bench", start)
    elif config.bench.budget_seconds > 0:
        console.print("[yellow]skipped the benchmark:[/] verification failed, so its speed would not mean much")
    _log_bundle(config, run_dir, console)
    start = time.perf_counter()
    report = write_report(run_dir)
    timed("report", start)
    console.print(_summary_table(run_dir, summary, times))
    console.print(f"report: {report}")
    return passed


def _log_bundle(config: Config, run_dir: Path, console: Console) -> None:
    """With ``train.loggers: [mlflow]``, the finished bundle becomes the artifact ``bundle`` of the run's MLflow run."""
    if "mlflow" in config.train.loggers:
        from torchport.train.loggers import log_bundle

        if log_bundle(run_dir):
            console.print(f"logged {run_dir / 'bundle'} to MLflow ({run_dir / 'mlflow.db'})")


def _summary_table(run_dir: Path, summary: dict[str, object], times: dict[str, float]) -> Table:
    bundle = read_bundle(run_dir / "bundle")
    table = Table(title=f"torchport run: {bundle.manifest.name}")
    table.add_column("what")
    table.add_column("value")
    for name, value in bundle.manifest.metrics.items():
        table.add_row(name, f"{value:.4f}" if value is not None else "-")
    for result in bundle.manifest.verification:
        worst = max((o.max_abs for c in result.checks for o in c.outputs.values()), default=0.0)
        table.add_row(f"parity {result.artifact}", f"{'pass' if result.passed else 'FAIL'} (max abs {worst:.2e})")
    for artifact in bundle.manifest.artifacts:
        table.add_row(f"size {artifact.path}", f"{artifact.bytes / 1024:.1f} KiB")
    for stage, seconds in times.items():
        table.add_row(f"time {stage}", f"{seconds:.1f} s")
    table.add_row("bundle", str(run_dir / "bundle"))
    return table
