"""Verify a whole bundle: every artifact against the PyTorch reference, or, for a bundle without its run
directory, against the golden outputs it carries.

The reference and the inputs are gathered once per bundle (``ParityContext``) and every artifact, exported or
variant, is checked against them by ``check_artifact``.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from torchport.bundle.graph import verify_all
from torchport.bundle.manifest import Artifact, ArtifactVerification, Bundle, read_bundle
from torchport.data import DataSplits, load_data
from torchport.export.deployable import TrainedRun, load_trained_run
from torchport.models.compose import layer_names
from torchport.sessions import Predictor, aoti_predictor, onnx_predictor, torch_predictor
from torchport.verify.gates import judged_by_accuracy
from torchport.verify.localize import first_diverging_layer
from torchport.verify.parity import InputSet, Tolerance, random_inputs, verify_artifact

MAX_VALIDATION_SAMPLES = 4096
VERIFIED_KINDS = ("onnx", "aoti", "ort")


@dataclass
class ParityContext:
    """What every artifact of one bundle is compared against, and on which inputs."""

    run: TrainedRun | None
    tol: Tolerance
    reference: Predictor
    reference_kind: str
    input_sets: list[InputSet]
    output_names: list[str]
    argmax_outputs: set[str]
    data: DataSplits | None = None  # the run's data, loaded once (optimize calibrates and gates on it too)


def parity_context(bundle: Bundle) -> ParityContext:
    """PyTorch on validation, random and golden inputs when the run directory is around the bundle; else the
    golden outputs on the golden inputs, at the default tolerance."""
    run_dir = bundle.root.parent
    output_names = [o.name for o in bundle.manifest.outputs]
    argmax_outputs = set(output_names) if bundle.manifest.task == "classification" else set()
    if (run_dir / "config.yaml").is_file():
        run = load_trained_run(run_dir, bundle.manifest.provenance.checkpoint)
        tol = Tolerance(run.config.verify.atol, run.config.verify.rtol)
        reference = torch_predictor(run.module, output_names)
        data = load_data(run.config.data, run.config.seed)
        sets = _input_sets(run, bundle, data)
        return ParityContext(run, tol, reference, "pytorch", sets, output_names, argmax_outputs, data)
    golden_set, golden = _golden_reference(bundle)
    return ParityContext(None, Tolerance(), golden, "golden", [golden_set], output_names, argmax_outputs)


def _golden_reference(bundle: Bundle) -> tuple[InputSet, Predictor]:
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
        inputs = random_inputs(meta.input_shape, meta.input_dtype, meta.input_min, meta.input_max, batch, seed=batch)
        sets.append(InputSet(f"random batch {batch}", inputs))
    sets.append(_golden_reference(bundle)[0])
    return sets


def _candidate(bundle: Bundle, artifact: Artifact, output_names: list[str]) -> Predictor:
    path = bundle.verified_path(artifact)
    if artifact.kind == "aoti":
        return aoti_predictor(path, output_names)
    return onnx_predictor(path)


def check_artifact(bundle: Bundle, artifact: Artifact, context: ParityContext) -> ArtifactVerification:
    """fp32 artifacts (exported or variants) must match the reference within tolerance; reduced-precision
    variants (int8, fp16) cannot by design, so their errors are recorded and they are judged by their accuracy
    gate and finite outputs (see verify/gates.py)."""
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


def verify_bundle(bundle_dir: Path, save: bool = False) -> tuple[Bundle, list[ArtifactVerification]]:
    """Check checksums, then every artifact against PyTorch (or, for a bundle alone, its golden outputs).

    Only measures: the results go into ``manifest.json`` when ``save`` is true (`torchport verify` saves them, the
    report shows them), never as a side effect of a Python caller's check."""
    bundle = read_bundle(bundle_dir)
    verify_all(bundle)
    context = parity_context(bundle)
    results = [
        check_artifact(bundle, artifact, context)
        for artifact in bundle.manifest.artifacts
        if artifact.kind in VERIFIED_KINDS
    ]
    if save:
        bundle.manifest.verification = results
        bundle.save()
    return bundle, results


@dataclass(frozen=True)
class VerifyReport:
    """What a verification found: one result per artifact (what the manifest's ``verification`` holds once saved).

    ``passed`` is the verdict; ``failures()`` says why in one line per failed artifact; ``table()`` is the parity
    table `torchport verify` prints, and ``str(report)`` the same as plain text."""

    bundle: Path
    results: list[ArtifactVerification]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def failures(self) -> list[str]:
        return [_failure_line(result) for result in self.results if not result.passed]

    def table(self) -> Table:
        return verification_table(self.results)

    def __str__(self) -> str:
        from rich.console import Console

        out = Console(file=io.StringIO(), width=160, no_color=True, highlight=False)
        out.print(self.table())
        for line in self.failures():
            out.print(f"FAILED {line}", markup=False)
        out.print(f"{'verified' if self.passed else 'verification failed'}: {len(self.results)} artifact(s)")
        return out.file.getvalue().rstrip()  # type: ignore[attr-defined]


def _failure_line(result: ArtifactVerification) -> str:
    diverging = result.first_diverging_layer
    layer = f"; first diverging layer: {diverging}" if diverging else ""
    return f"{result.artifact} in {result.runtime} exceeds atol {result.atol:g}, rtol {result.rtol:g}{layer}"


def verify_report(bundle_dir: Path, save: bool = False) -> VerifyReport:
    """:func:`verify_bundle` as a report (``save``: record the results in the manifest)."""
    started = time.perf_counter()
    _, results = verify_bundle(bundle_dir, save=save)
    return VerifyReport(bundle_dir, results, time.perf_counter() - started)


def verification_table(results: list[ArtifactVerification]) -> Table:
    """One row per artifact and output: the worst error over all input sets, as `torchport verify` prints it."""
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
