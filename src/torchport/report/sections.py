"""The report's sections read from the bundle's manifest: parity, variants, conformance and the bundle itself.

Each section is a view (a frozen dataclass of text and tables) built here and laid out by the template of the
same name under templates/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchport.bundle.manifest import Manifest, Provenance, VariantOutcome
from torchport.report.figures import parity_png
from torchport.report.view import Cell, Mark, Table, shell_word, verdict

PARITY_HEADERS = ["artifact", "runtime", "inputs", "batch", "output", "max abs", "max rel", "needed atol", "argmax", ""]
VARIANT_HEADERS = ["artifact", "precision", "size", "smaller than fp32", "accuracy"]
VARIANT_HEADERS += ["median latency, batch 1, 1 thread"]
CONFORMANCE_HEADERS = ["runtime", "engine", "artifact", "max abs vs golden", "latency, batch 1", ""]


@dataclass(frozen=True)
class ParityView:
    tolerances: str
    diverging: list[tuple[str, str]]  # (artifact, its first diverging layer)
    table: Table
    figure: bytes | None
    reproduce: list[str]


@dataclass(frozen=True)
class VariantsView:
    left_out: list[VariantOutcome]  # refused or failed: not in the bundle, said why above the table
    table: Table
    reproduce: list[str]


@dataclass(frozen=True)
class ConformanceView:
    table: Table
    reproduce: list[str]


@dataclass(frozen=True)
class BundleView:
    tensors: Table
    labels: str
    artifacts: Table
    provenance: Provenance


def conformance_command(manifest: Manifest, bundle: Path) -> str:
    """Only the runtimes that ran: naming one that was skipped (its prerequisite missing) would be exit 2."""
    ran = dict.fromkeys(r.runtime for r in manifest.conformance if r.status in ("passed", "failed"))
    return f"torchport conformance {shell_word(bundle)}" + (f" --runtimes {','.join(ran)}" if ran else "")


def parity_view(manifest: Manifest, bundle: Path) -> ParityView:
    rows: list[list[Cell]] = []
    for result in manifest.verification:
        for check in result.checks:
            for name, out in check.outputs.items():
                agreement = f"{out.argmax_agreement:.4f}" if out.argmax_agreement is not None else "-"
                rows.append(
                    [
                        result.artifact,
                        result.runtime,
                        check.inputs,
                        str(check.batch),
                        name,
                        f"{out.max_abs:.2e}",
                        f"{out.max_rel:.2e}",
                        f"{out.needed_atol:.2e}",
                        agreement,
                        verdict(out.passed),
                    ]
                )
    commands = [f"torchport verify {shell_word(bundle)}"]
    if manifest.conformance:  # the figure's "vs golden" bars
        commands.append(conformance_command(manifest, bundle))
    return ParityView(
        tolerances=", ".join(sorted({f"atol {r.atol:g}, rtol {r.rtol:g}" for r in manifest.verification})) or "-",
        diverging=[(r.artifact, r.first_diverging_layer) for r in manifest.verification if r.first_diverging_layer],
        table=Table(PARITY_HEADERS, rows),
        figure=parity_png(manifest),
        reproduce=commands,
    )


def variants_view(manifest: Manifest, bundle: Path) -> VariantsView | None:
    """Size, accuracy against fp32 and batch-1 latency of every artifact, and why a variant was left out."""
    if not manifest.variants:
        return None
    fp32_bytes = next((a.bytes for a in manifest.artifacts if a.kind == "onnx" and a.precision == "fp32"), 0)
    rows: list[list[Cell]] = []
    for artifact in manifest.artifacts:
        if artifact.kind == "aoti":
            continue
        batch1 = [lat for lat in artifact.latency if lat.batch == 1 and lat.threads == 1]
        accuracy = artifact.accuracy
        rows.append(
            [
                artifact.path,
                artifact.precision,
                f"{artifact.bytes / 1024:.1f} KiB",
                f"{fp32_bytes / artifact.bytes:.2f}×" if artifact.bytes else "-",
                f"{accuracy.metric} {accuracy.value:.4f} (fp32 {accuracy.reference:.4f})" if accuracy else "-",
                f"{batch1[0].median_ms:.3f} ms" if batch1 else "-",
            ]
        )
    return VariantsView(
        left_out=[v for v in manifest.variants if v.status != "kept"],
        table=Table(VARIANT_HEADERS, rows),
        reproduce=[f"torchport optimize {shell_word(bundle)}"],
    )


def conformance_view(manifest: Manifest, bundle: Path) -> ConformanceView | None:
    """Each runtime's run of the golden inputs (`torchport conformance`), as recorded in the manifest."""
    if not manifest.conformance:
        return None
    rows: list[list[Cell]] = []
    for result in manifest.conformance:
        worst = max((o.max_abs for o in result.outputs.values()), default=0.0)
        batch1 = [lat for lat in result.latency if lat.batch == 1]
        mark = verdict(result.status == "passed", failed_as=result.status)
        outcome: Cell = (mark, f" {result.reason}") if result.reason else mark
        rows.append(
            [
                result.runtime,
                f"{result.engine} {result.version}".strip(),
                result.artifact,
                f"{worst:.2e}",
                f"{batch1[0].median_ms:.3f} ms" if batch1 else "-",
                outcome,
            ]
        )
    return ConformanceView(Table(CONFORMANCE_HEADERS, rows), [conformance_command(manifest, bundle)])


def bundle_view(manifest: Manifest) -> BundleView:
    tensors: list[list[Cell]] = [
        ["input" if t in manifest.inputs else "output", t.name, t.dtype, str(t.shape)]
        for t in [*manifest.inputs, *manifest.outputs]
    ]
    artifacts: list[list[Cell]] = [
        [a.path, a.kind, a.precision, f"{a.bytes:,}", Mark(f"{a.sha256[:16]}…", "code")] for a in manifest.artifacts
    ]
    return BundleView(
        tensors=Table(["tensor", "name", "dtype", "shape"], tensors),
        labels=", ".join(manifest.labels) or "-",
        artifacts=Table(["artifact", "kind", "precision", "bytes", "sha256"], artifacts),
        provenance=manifest.provenance,
    )
