"""``torchport inspect BUNDLE``: what a bundle holds, readable at a glance."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from torchport.bundle.graph import check_graph
from torchport.bundle.manifest import Artifact, Bundle, Latency, Manifest, read_bundle
from torchport.errors import BundleError


def _checksum_problems(bundle: Bundle) -> dict[str, str]:
    """Bundle path -> why it fails (missing, checksum), for every file the manifest names; empty when all match."""
    problems: dict[str, str] = {}
    for entry in bundle.files():
        try:
            bundle.verified_path(entry)
        except BundleError as exc:
            problems[entry.path] = str(exc)
    return problems


def print_bundle(root: Path, console: Console) -> None:
    """Print the summary; BundleError after it when a file fails its checksum (the table shows which), and before
    it when the manifest's tensors disagree with the graph."""
    bundle = read_bundle(root)
    manifest = bundle.manifest
    problems = _checksum_problems(bundle)
    if not problems:
        check_graph(bundle)  # reads the ONNX files, so only once their checksums are known to match
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
    for column in ("path", "kind", "precision", "opset", "size", "sha256", "checksum", "verified"):
        artifacts.add_column(column)
    verdicts = {v.artifact: v for v in manifest.verification}
    for artifact in manifest.artifacts:
        verdict = verdicts.get(artifact.path)
        status = "-" if verdict is None else ("[green]pass[/]" if verdict.passed else "[red]FAIL[/]")
        if artifact.path in problems:  # the stored verdict was about other bytes
            status = "[red]stale: the file changed since[/]" if verdict is not None else "-"
        artifacts.add_row(
            artifact.path,
            artifact.kind,
            artifact.precision,
            str(artifact.opset or "-"),
            f"{artifact.bytes / 1024:.1f} KiB",
            artifact.sha256[:12] + "…",
            "[red]MISMATCH[/]" if artifact.path in problems else "[green]ok[/]",
            status,
        )
    console.print(artifacts)
    checked = len(bundle.files())
    if problems:
        console.print(f"[red]checksums: {len(problems)} of {checked} files fail:[/] {', '.join(problems)}")
    else:
        console.print(f"checksums: all {checked} files match the manifest (SHA-256, computed now)")
    if any(a.latency or a.accuracy for a in manifest.artifacts) or manifest.variants:
        console.print(variants_table(manifest))
    files = len(manifest.golden.inputs) + len(manifest.golden.outputs)
    console.print(f"golden: {manifest.golden.samples} samples in {files} files")
    for name, value in manifest.metrics.items():
        console.print(f"{name}: {value:.4f}" if value is not None else f"{name}: -")
    origin = manifest.provenance
    console.print(
        f"made by torchport {origin.torchport} with torch {origin.torch}, onnx {origin.onnx}, onnxruntime "
        f"{origin.onnxruntime}; config {origin.config_name} ({origin.config_hash}); commit {origin.git_commit or '-'};"
        f" {origin.created}"
    )
    if problems:
        raise BundleError(next(iter(problems.values())))


def _ms(latencies: list[Latency], batch: int, threads: int) -> str:
    found = next((x for x in latencies if x.batch == batch and x.threads == threads), None)
    return "-" if found is None else f"{found.median_ms:.3g} / {found.p99_ms:.3g}"


def _accuracy(artifact: Artifact) -> str:
    gate = artifact.accuracy
    if gate is None:
        return "-"
    if artifact.variant is None:
        return f"{gate.value:.4f}"
    if gate.metric == "val_accuracy":  # the difference to fp32, negative when the variant is worse
        return f"{gate.value:.4f} ({gate.value - gate.reference:+.4f})"
    return f"{gate.value:.4g} ({gate.change * 100:+.2f}%)"  # RMSE: the relative rise over fp32


def variants_table(manifest: Manifest) -> Table:
    """Size, accuracy and ONNX Runtime CPU latency (median / p99 ms) of the fp32 model and its variants."""
    table = Table(
        title="variants: size, accuracy (vs fp32), ONNX Runtime CPU latency in ms, median / p99, batch b, threads t"
    )
    for column in ("path", "precision", "size", "vs fp32", "accuracy", "b1 t1", "b1 t2", "b64 t1", "b64 t2"):
        table.add_column(column)
    fp32 = next((a for a in manifest.artifacts if a.kind == "onnx" and a.variant is None), None)
    for artifact in manifest.artifacts:
        if artifact.kind == "aoti":
            continue
        ratio = f"{fp32.bytes / artifact.bytes:.2f}x smaller" if fp32 and artifact is not fp32 else "-"
        table.add_row(
            artifact.path,
            artifact.precision,
            f"{artifact.bytes / 1024:.1f} KiB",
            ratio,
            _accuracy(artifact),
            *(_ms(artifact.latency, b, t) for b, t in ((1, 1), (1, 2), (64, 1), (64, 2))),
        )
    left_out = [f"{o.status} {o.path}: {o.reason}" for o in manifest.variants if o.status != "kept"]
    if left_out:
        table.caption = "\n".join(left_out)
    return table
