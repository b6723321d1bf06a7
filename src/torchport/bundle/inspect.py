"""``torchport inspect BUNDLE``: what a bundle holds, readable at a glance."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from torchport.bundle.manifest import read_bundle


def print_bundle(root: Path, console: Console) -> None:
    bundle = read_bundle(root)
    manifest = bundle.manifest
    console.print(f"[bold]{manifest.name}[/] — {manifest.task}, bundle format {manifest.format_version}")
    tensors = Table(title="tensors")
    for column in ("", "name", "dtype", "shape"):
        tensors.add_column(column)
    for kind, specs in (("input", manifest.inputs), ("output", manifest.outputs)):
        for spec in specs:
            tensors.add_row(kind, spec.name, spec.dtype, str(spec.shape))
    console.print(tensors)
    if manifest.labels:
        console.print(f"labels: {', '.join(manifest.labels)}")
    console.print(f"preprocessing: {manifest.preprocessing.description}")
    artifacts = Table(title="artifacts")
    for column in ("path", "kind", "precision", "opset", "size", "sha256", "verified"):
        artifacts.add_column(column)
    verdicts = {v.artifact: v for v in manifest.verification}
    for artifact in manifest.artifacts:
        verdict = verdicts.get(artifact.path)
        status = "-" if verdict is None else ("[green]pass[/]" if verdict.passed else "[red]FAIL[/]")
        artifacts.add_row(
            artifact.path,
            artifact.kind,
            artifact.precision,
            str(artifact.opset or "-"),
            f"{artifact.bytes / 1024:.1f} KiB",
            artifact.sha256[:12] + "…",
            status,
        )
    console.print(artifacts)
    console.print(
        f"golden: {manifest.golden.samples} samples in {len(manifest.golden.inputs) + len(manifest.golden.outputs)} files"
    )
    for name, value in manifest.metrics.items():
        console.print(f"{name}: {value:.4f}" if value is not None else f"{name}: -")
    origin = manifest.provenance
    console.print(
        f"made by torchport {origin.torchport} with torch {origin.torch}, onnx {origin.onnx}, onnxruntime "
        f"{origin.onnxruntime}; config {origin.config_name} ({origin.config_hash}); commit {origin.git_commit or '-'};"
        f" {origin.created}"
    )
