"""`torchport optimize`'s loop: build each requested variant, verify it, gate it on accuracy, keep it or drop it.

Building is export's (``export/variants.py``); judging is ours: fp32 variants must match PyTorch like the exported
model, reduced-precision ones pass on their accuracy gate (``verify/gates.py``). A variant that fails is deleted
and named in one line; it never enters the manifest. At the end every ONNX Runtime artifact's latency is measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from torchport.bundle.graph import verify_all
from torchport.bundle.manifest import Artifact, ArtifactVerification, Bundle, VariantOutcome, file_entry, read_bundle
from torchport.config import Config
from torchport.data import DataSplits
from torchport.errors import UsageError, first_line
from torchport.export.measure import BATCHES, THREADS, measure_latency
from torchport.export.optimize import VariantSource, calibration_samples
from torchport.export.variants import Variant
from torchport.progress import working
from torchport.registry import VARIANTS
from torchport.verify.bundle import ParityContext, check_artifact, parity_context
from torchport.verify.gates import accuracy_gate, describe_gate, evaluate_artifact, parity_problem
from torchport.verify.parity import random_inputs

if TYPE_CHECKING:
    from rich.console import Console

Say = Callable[[str], object]


@dataclass(frozen=True)
class RunBundle:
    """A bundle inside its run directory: calibration and the gates need the run's config and data."""

    bundle: Bundle
    context: ParityContext
    config: Config
    data: DataSplits


def open_run_bundle(bundle_dir: Path) -> RunBundle:
    """The bundle (checksums verified) with its run; a UsageError for a bundle outside its run directory."""
    bundle = read_bundle(bundle_dir)
    verify_all(bundle)
    if not (bundle_dir.parent / "config.yaml").is_file():
        raise UsageError(
            f"{bundle_dir}: optimize needs the run directory around the bundle (its config.yaml, checkpoint and "
            "data) to calibrate and gate the variants"
        )
    context = parity_context(bundle)
    assert context.run is not None and context.data is not None  # a run directory means its run and data
    return RunBundle(bundle, context, context.run.config, context.data)


def optimize_bundle(target: RunBundle, say: Say, console: Console | None = None) -> list[VariantOutcome]:
    """Build, gate and measure every variant in ``export.variants``; the manifest is saved at the end. On a
    terminal ``console`` a spinner names the variant being built and checked."""
    bundle, settings = target.bundle, target.config.export
    drop_variants(bundle)
    source, source_path = _gated_source(target)
    made_from = VariantSource(
        source_path,
        settings,
        calibration_samples(target.data, settings.calibration_samples, target.config.seed),
        bundle.manifest.inputs[0].name,
    )
    outcomes = []
    for name in settings.variants:
        with working(console, f"building and checking variant {name}"):
            outcome, verification = _try_variant(target, VARIANTS.get(name), source, made_from)
        outcomes.append(outcome)
        if outcome.status == "kept":
            say(f"[green]kept[/] {_kept_line(bundle, outcome.path, source)}")
        else:
            say(f"[bold red]{outcome.status}[/] {outcome.path}: {outcome.reason}")
        if verification is not None:
            _record(bundle, verification)
    if settings.latency_iterations:
        with working(console, "measuring latencies"):
            measure_latencies(bundle, settings.latency_iterations)
    bundle.manifest.variants = outcomes
    bundle.save()
    return outcomes


def drop_variants(bundle: Bundle) -> None:
    """Forget (and delete) the variants of an earlier optimize run, so a rerun starts from the exported originals."""
    manifest = bundle.manifest
    old = [a for a in manifest.artifacts if a.variant is not None]
    for artifact in old:
        bundle.path(artifact.path).unlink(missing_ok=True)
    paths = {a.path for a in old}
    manifest.artifacts = [a for a in manifest.artifacts if a.variant is None]
    manifest.verification = [v for v in manifest.verification if v.artifact not in paths]
    manifest.variants = []


def _gated_source(target: RunBundle) -> tuple[Artifact, Path]:
    """The fp32 ``model.onnx`` (and its checked path), its own metric recorded as the reference every variant's
    gate compares with."""
    manifest, data = target.bundle.manifest, target.data
    source = next(a for a in manifest.artifacts if a.kind == "onnx" and a.precision == "fp32")
    path = target.bundle.verified_path(source)
    reference = evaluate_artifact(path, data.val.x, data.val.y, manifest.task, manifest.outputs[0].name)
    source.accuracy = accuracy_gate(manifest.task, reference, reference, target.config.export.max_accuracy_drop)
    return source, path


def _try_variant(
    target: RunBundle, variant: Variant, source: Artifact, made_from: VariantSource
) -> tuple[VariantOutcome, ArtifactVerification | None]:
    """Build one variant and judge it; a kept one is appended to the manifest's artifacts."""
    bundle = target.bundle
    path = bundle.path(variant.file_name)
    path.unlink(missing_ok=True)
    try:
        artifact = _built_artifact(target, variant, source, made_from)
        verification = check_artifact(bundle, artifact, target.context)
    except Exception as exc:
        path.unlink(missing_ok=True)
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        return VariantOutcome(variant=variant.name, path=variant.file_name, status="failed", reason=reason), None
    assert artifact.accuracy is not None  # _built_artifact gates every variant
    if not artifact.accuracy.passed or not verification.passed:
        path.unlink(missing_ok=True)
        reason = describe_gate(artifact.accuracy) if not artifact.accuracy.passed else parity_problem(verification)
        return VariantOutcome(variant=variant.name, path=variant.file_name, status="refused", reason=reason), None
    bundle.manifest.artifacts.append(artifact)
    return VariantOutcome(variant=variant.name, path=variant.file_name, status="kept", reason=""), verification


def _built_artifact(target: RunBundle, variant: Variant, source: Artifact, made_from: VariantSource) -> Artifact:
    """Build the variant into the bundle and describe it, its accuracy gate filled in."""
    bundle, data = target.bundle, target.data
    path = bundle.path(variant.file_name)
    recipe = variant.build(made_from, path)
    artifact = Artifact(
        kind=variant.kind,
        precision=variant.precision,
        opset=source.opset,
        runtime="onnxruntime",
        variant=variant.name,
        derived_from=source.path,
        recipe=recipe,
        **file_entry(bundle.root, path),
    )
    task = bundle.manifest.task
    value = evaluate_artifact(path, data.val.x, data.val.y, task, bundle.manifest.outputs[0].name)
    assert source.accuracy is not None  # set by _gated_source
    artifact.accuracy = accuracy_gate(task, value, source.accuracy.reference, target.config.export.max_accuracy_drop)
    return artifact


def _record(bundle: Bundle, verification: ArtifactVerification) -> None:
    """Put a kept variant's verification in the manifest, replacing an earlier one of the same file."""
    manifest = bundle.manifest
    manifest.verification = [v for v in manifest.verification if v.artifact != verification.artifact]
    manifest.verification.append(verification)


def measure_latencies(bundle: Bundle, iterations: int) -> None:
    """ONNX Runtime CPU latency of every artifact that runs there, exported or variant, on the same inputs."""
    inputs = latency_inputs(bundle)
    for artifact in bundle.manifest.artifacts:
        if artifact.runtime == "onnxruntime" and artifact.kind in ("onnx", "ort"):
            artifact.latency = measure_latency(bundle.verified_path(artifact), inputs, THREADS, iterations)


def latency_inputs(bundle: Bundle) -> dict[int, np.ndarray]:
    spec = bundle.manifest.inputs[0]
    low, high = bundle.manifest.preprocessing.input_range
    shape = tuple(int(d) for d in spec.shape[1:])
    return {batch: random_inputs(shape, spec.dtype, low, high, batch, seed=batch) for batch in BATCHES}


def _kept_line(bundle: Bundle, path: str, source: Artifact) -> str:
    artifact = next(a for a in bundle.manifest.artifacts if a.path == path)
    gate = artifact.accuracy
    metric = f"{gate.metric} {gate.value:.4f} (fp32 {gate.reference:.4f})" if gate else ""
    return f"{path}: {artifact.bytes / 1024:.1f} KiB ({source.bytes / artifact.bytes:.2f}x smaller), {metric}"
