"""The stages after training, and ``run`` which chains them all.

Each stage reads what the previous one wrote into the run directory: export reads ``config.yaml`` and a
checkpoint, verify reads the bundle (and the run's checkpoint for the PyTorch reference), the report reads
everything. Nothing passes between stages in memory, so a user can enter at any verb.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
from torchport.bundle.manifest import Artifact, ArtifactVerification, Bundle, read_bundle
from torchport.config import BenchConfig, Config
from torchport.data import DataSplits, load_data
from torchport.errors import ConfigError, UsageError, first_line
from torchport.export.deployable import TrainedRun, load_trained_run
from torchport.models.compose import build_model, layer_names
from torchport.verify.parity import InputSet, Tolerance, random_inputs, verify_artifact
from torchport.verify.runners import Runner, aoti_runner, onnx_runner, torch_runner

MAX_VALIDATION_SAMPLES = 4096


def dry_build(config: Config) -> str:
    """Load the data and build the model once: what `validate` checks beyond the config's types."""
    from torchport.train.loop import model_meta, model_spec

    data = load_data(config.data, config.seed)
    model = build_model(model_spec(config, model_meta(data)))
    parameters = sum(p.numel() for p in model.parameters())
    return f"{tuple(data.input_shape)} -> ({data.num_outputs},), {parameters:,} parameters, {data.task}"


# --- export --------------------------------------------------------------------------------------------------


def export_stage(run_dir: Path, console: Console) -> Bundle:
    """Export ONNX (and the AOTInductor package when a compiler is there) and write the bundle."""
    from torchport.export.aoti import export_aoti, find_cxx
    from torchport.export.onnx import export_onnx
    from torchport.train.loop import evaluate
    from torchport.train.tasks import make_task

    run = load_trained_run(run_dir)
    bundle_dir = fresh_bundle_dir(run_dir)
    origin = provenance(run)
    artifacts: list[Artifact] = []

    started = time.perf_counter()
    onnx_path = export_onnx(run, bundle_dir / "model.onnx", {k: str(v) for k, v in origin.model_dump().items()})
    artifacts.append(artifact_entry(bundle_dir, onnx_path, "onnx", "onnxruntime", run.config.export.opset))
    console.print(f"exported {onnx_path} ({onnx_path.stat().st_size:,} bytes) in {time.perf_counter() - started:.1f} s")

    aoti_setting = run.config.export.aoti
    compiler = find_cxx()
    if aoti_setting is False:
        console.print("skipped model.pt2: export.aoti is false")
    elif compiler is None:
        if aoti_setting is True:
            raise ConfigError("export.aoti: true, but no C++ compiler (g++, c++, clang++ or $CXX) was found")
        console.print("[yellow]skipped model.pt2:[/] no C++ compiler found (install g++ to build the C++ package)")
    else:
        started = time.perf_counter()
        pt2_path = export_aoti(run, bundle_dir / "model.pt2")
        artifacts.append(artifact_entry(bundle_dir, pt2_path, "aoti", "torch.aoti"))
        console.print(
            f"exported {pt2_path} ({pt2_path.stat().st_size:,} bytes) in {time.perf_counter() - started:.1f} s"
        )

    data = load_data(run.config.data, run.config.seed)
    golden = write_golden(bundle_dir, run, data.val.x[: run.config.export.golden_samples])
    task = make_task(run.config.train, data)
    metrics: dict[str, float | None] = {
        f"val_{k}": v for k, v in evaluate(run.module.model, data.val, task, 256, torch.device("cpu")).items()
    }
    bundle = write_manifest(bundle_dir, run, artifacts, golden, metrics)
    install_runners(bundle_dir)
    console.print(f"bundle written to {bundle_dir}")
    return bundle


def install_runners(bundle_dir: Path) -> None:
    """Ship every runtime's standalone runner under ``bundle/runners/`` and every v2 client under
    ``bundle/clients/`` (each with its README), ready to copy."""
    from torchport.runtimes.base import install_files
    from torchport.runtimes.conformance import clients, registry

    for runtime in [*registry().values(), *clients().values()]:
        install_files(runtime, bundle_dir)


# --- verify --------------------------------------------------------------------------------------------------


def _candidate(bundle: Bundle, artifact: Artifact, output_names: list[str]) -> Runner:
    path = bundle.verified_path(artifact)
    if artifact.kind == "aoti":
        return aoti_runner(path, output_names)
    return onnx_runner(path)


def _golden_reference(bundle: Bundle) -> tuple[InputSet, Runner]:
    golden = bundle.manifest.golden
    inputs = bundle.read_tensor(golden.inputs[0])
    outputs = {tensor.name: bundle.read_tensor(tensor) for tensor in golden.outputs}

    def reference(batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.shape != inputs.shape or not np.array_equal(batch, inputs):
            raise ValueError("the golden reference only answers for the golden inputs")
        return outputs

    return InputSet("golden", inputs), reference


def _input_sets(run: TrainedRun, bundle: Bundle, data: DataSplits) -> list[InputSet]:
    meta = run.meta
    sets = [InputSet("validation", data.val.x[:MAX_VALIDATION_SAMPLES])] if len(data.val.x) else []
    for batch in run.config.verify.batch_sizes:
        inputs = random_inputs(
            tuple(meta["input_shape"]),
            meta["input_dtype"],
            meta["input_min"],
            meta["input_max"],
            batch,
            seed=batch,
        )
        sets.append(InputSet(f"random batch {batch}", inputs))
    sets.append(_golden_reference(bundle)[0])
    return sets


@dataclass
class _ParityContext:
    """What every artifact of one bundle is compared against, and on which inputs."""

    run: TrainedRun | None
    tol: Tolerance
    reference: Runner
    reference_kind: str
    input_sets: list[InputSet]
    output_names: list[str]
    argmax_outputs: set[str]
    data: DataSplits | None = None  # the run's data, loaded once (optimize calibrates and gates on it too)


def _parity_context(bundle: Bundle) -> _ParityContext:
    run_dir = bundle.root.parent
    output_names = [o.name for o in bundle.manifest.outputs]
    argmax_outputs = set(output_names) if bundle.manifest.task == "classification" else set()
    if (run_dir / "config.yaml").is_file():
        run = load_trained_run(run_dir, bundle.manifest.provenance.checkpoint)
        tol = Tolerance(run.config.verify.atol, run.config.verify.rtol)
        reference = torch_runner(run.module, output_names)
        data = load_data(run.config.data, run.config.seed)
        sets = _input_sets(run, bundle, data)
        return _ParityContext(run, tol, reference, "pytorch", sets, output_names, argmax_outputs, data)
    golden_set, golden = _golden_reference(bundle)
    return _ParityContext(None, Tolerance(), golden, "golden", [golden_set], output_names, argmax_outputs)


def _check_artifact(bundle: Bundle, artifact: Artifact, context: _ParityContext) -> ArtifactVerification:
    """fp32 artifacts (exported or variants) must match the reference within tolerance; reduced-precision
    variants (int8, fp16) cannot by design, so their errors are recorded and they are judged by their accuracy
    gate and finite outputs (see export/optimize.py)."""
    from torchport.export.optimize import judged_by_accuracy
    from torchport.verify.localize import first_diverging_layer

    candidate = _candidate(bundle, artifact, context.output_names)
    result = verify_artifact(
        artifact.path,
        artifact.runtime,
        candidate,
        context.reference,
        context.reference_kind,
        context.input_sets,
        context.tol,
        context.argmax_outputs,
    )
    if artifact.precision != "fp32":
        return judged_by_accuracy(result, artifact.accuracy)
    run = context.run
    if not result.passed and run is not None and artifact.kind == "onnx" and artifact.variant is None:
        probe = context.input_sets[0].inputs[:64]
        names = layer_names(run.config.model.layers)
        result.first_diverging_layer = first_diverging_layer(
            bundle.path(artifact.path), run.module, probe, context.tol, names
        )
    return result


def verify_bundle(bundle_dir: Path) -> tuple[Bundle, list[ArtifactVerification]]:
    """Check checksums, then every artifact against PyTorch (or, for a bundle alone, its golden outputs)."""
    bundle = read_bundle(bundle_dir)
    bundle.verify_all()
    context = _parity_context(bundle)
    results = [
        _check_artifact(bundle, artifact, context)
        for artifact in bundle.manifest.artifacts
        if artifact.kind in ("onnx", "aoti", "ort")
    ]
    bundle.manifest.verification = results
    bundle.save()
    return bundle, results


def verification_table(results: list[ArtifactVerification]) -> Table:
    inputs = ", ".join(f"{c.inputs} ({c.batch})" for c in results[0].checks) if results else "-"
    table = Table(title="parity against the reference (worst over all inputs)", caption=f"inputs: {inputs}")
    for column in (
        "artifact",
        "runtime",
        "output",
        "max abs",
        "max rel",
        "needed atol",
        "argmax agree",
        "result",
    ):
        table.add_column(column)
    for result in results:
        names = list(result.checks[0].outputs) if result.checks else []
        for name in names:
            rows = [c.outputs[name] for c in result.checks]
            agreements = [r.argmax_agreement for r in rows if r.argmax_agreement is not None]
            ok = all(r.passed for r in rows)
            table.add_row(
                result.artifact,
                result.runtime,
                name,
                f"{max(r.max_abs for r in rows):.2e}",
                f"{max(r.max_rel for r in rows):.2e}",
                f"{max(r.needed_atol for r in rows):.2e}",
                f"{min(agreements):.4f}" if agreements else "-",
                "[green]pass[/]" if ok else "[bold red]FAIL[/]",
            )
    return table


def verify_stage(bundle_dir: Path, console: Console) -> bool:
    started = time.perf_counter()
    _, results = verify_bundle(bundle_dir)
    console.print(verification_table(results))
    for result in results:
        if not result.passed:
            layer = f"; first diverging layer: {result.first_diverging_layer}" if result.first_diverging_layer else ""
            console.print(
                f"[bold red]FAILED[/] {result.artifact} in {result.runtime} exceeds atol {result.atol:g}, "
                f"rtol {result.rtol:g}{layer}"
            )
    passed = all(r.passed for r in results)
    verdict = "[green]verified[/]" if passed else "[bold red]verification failed[/]"
    console.print(f"{verdict} {len(results)} artifact(s) in {time.perf_counter() - started:.1f} s")
    return passed


# --- optimize ------------------------------------------------------------------------------------------------


def optimize_stage(bundle_dir: Path, console: Console) -> bool:
    """Add the variants in ``export.variants`` to a bundle, each gated on accuracy (and fp32 ones on parity).

    A refused or failed variant is left out and named in one line; it fails the stage only with
    ``export.strict_variants: true``. Needs the run directory around the bundle: calibration and the gate use
    its data.
    """
    from torchport.export.optimize import optimize_bundle

    started = time.perf_counter()
    bundle = read_bundle(bundle_dir)
    bundle.verify_all()
    if not (bundle_dir.parent / "config.yaml").is_file():
        raise UsageError(
            f"{bundle_dir}: optimize needs the run directory around the bundle (its config.yaml, checkpoint and "
            "data) to calibrate and gate the variants"
        )
    context = _parity_context(bundle)
    assert context.run is not None
    config = context.run.config
    if not config.export.variants:
        console.print("no variants requested (export.variants is empty)")
        return True
    assert context.data is not None  # a run directory means its data
    outcomes = optimize_bundle(
        bundle,
        config.export,
        context.data,
        config.seed,
        lambda artifact: _check_artifact(bundle, artifact, context),
        console.print,
    )
    from torchport.bundle.inspect import variants_table

    console.print(variants_table(bundle.manifest))
    kept = sum(o.status == "kept" for o in outcomes)
    left_out = [o.path for o in outcomes if o.status != "kept"]  # variants_table above gives the reasons
    passed = not (left_out and config.export.strict_variants)
    verdict = (
        "[green]optimized[/]"
        if not left_out
        else ("[bold red]optimize failed[/]" if not passed else "[yellow]optimized[/]")
    )
    console.print(
        f"{verdict} {kept} of {len(outcomes)} variant(s) kept in {time.perf_counter() - started:.1f} s"
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
    )
    return passed


# --- run -----------------------------------------------------------------------------------------------------


def bench_run_stage(run_dir: Path, settings: BenchConfig, console: Console) -> None:
    """The short benchmark at the end of `torchport run`: ``bench.budget_seconds`` of timed calls in all."""
    from torchport.bench import bench_stage

    bench_stage(
        run_dir / "bundle",
        console,
        batches=settings.batch_sizes,
        threads=settings.threads,
        compile=settings.compile,
        total_budget_s=settings.budget_seconds,
    )


def run_pipeline(config: Config, run_dir: Path | None, console: Console, overwrite: bool = False) -> bool:
    """train -> export -> verify -> bundle -> report, with a closing summary table. ``overwrite``: start over in
    a run dir that holds an earlier run's checkpoints (refused otherwise)."""
    from torchport.config import default_run_dir
    from torchport.report.html import write_report
    from torchport.train.loop import train

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
    start = time.perf_counter()
    report = write_report(run_dir)
    timed("report", start)
    console.print(_summary_table(run_dir, summary, times))
    console.print(f"report: {report}")
    return passed


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
