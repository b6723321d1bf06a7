"""``--json``: the one JSON document a verb prints on stdout, and the plumbing that keeps stdout its own.

A document is read from what the stage left on disk (manifest.json, summary.json, bench.json) once the stage is
done, not from its return value: the files are the contract between stages, so they are the stable thing to
describe. The keys are listed in the README (Machine-readable output): add keys, never rename or remove them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchport.bundle.manifest import ArtifactVerification, ConformanceResult, Manifest, OutputParity
    from torchport.config import Config

Document = dict[str, Any]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While a verb runs with --json, whatever would reach stdout goes to stderr: print(), rich, a child process,
    a C library writing to file descriptor 1. Stdout then holds the document and nothing else."""
    sys.stdout.flush()
    try:
        saved: int | None = os.dup(1)
    except OSError:  # no file descriptor 1 (an embedding host): Python's own stdout is all there is to move
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def emit(document: Document) -> None:
    """Print the document: one JSON value on stdout, NaN and infinities as null (JSON has neither)."""
    print(json.dumps(_finite(document), indent=2), flush=True)


def error_document(message: str, exit_code: int) -> Document:
    """What stdout holds when a verb could not finish (exit 2, 3 or 130): stderr's line, and the exit code."""
    return {"error": message, "exit_code": exit_code}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _manifest(bundle_dir: Path) -> Manifest:
    from torchport.bundle.manifest import read_bundle

    return read_bundle(bundle_dir).manifest


# --- one document per verb -------------------------------------------------------------------------------------


def validate_document(config_path: Path, config: Config, model: str) -> Document:
    """``config``: resolved (overrides applied, paths absolute); ``model``: dry_build's one-line description."""
    return {
        "ok": True,
        "config": str(config_path),
        "name": config.name,
        "model": model,
        "resolved": config.model_dump(mode="json"),
    }


def train_document(run_dir: Path) -> Document:
    """From ``summary.json``, which rank 0 writes when training ends; the checkpoints that exist."""
    summary = json.loads((run_dir / "summary.json").read_text())
    best, metric = summary["best"], summary["metric"]
    folder = run_dir / "checkpoints"
    return {
        "name": summary["name"],
        "run_dir": str(run_dir),
        "metric": metric,
        "best": best.get(metric),
        "best_epoch": best.get("epoch", 0) + 1,  # 1-based, as the human line says it
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "samples_per_second": summary["samples_per_second"],
        "world_size": summary["world_size"],
        "checkpoints": {
            name: str(folder / f"{name}.pt") for name in ("best", "last") if (folder / f"{name}.pt").exists()
        },
        "summary": str(run_dir / "summary.json"),
    }


def verify_document(bundle_dir: Path, passed: bool) -> Document:
    """Per artifact the worst figures over every input set and output (the manifest keeps each check)."""
    return {
        "bundle": str(bundle_dir),
        "passed": passed,
        "artifacts": [_parity(result) for result in _manifest(bundle_dir).verification],
    }


def _worst(parities: list[OutputParity]) -> Document:
    agreements = [p.argmax_agreement for p in parities if p.argmax_agreement is not None]
    return {
        "max_abs": max((p.max_abs for p in parities), default=None),
        "max_rel": max((p.max_rel for p in parities), default=None),
        "argmax_agreement": min(agreements, default=None),
    }


def _parity(result: ArtifactVerification) -> Document:
    parities = [parity for check in result.checks for parity in check.outputs.values()]
    return {
        "artifact": result.artifact,
        "runtime": result.runtime,
        "reference": result.reference,
        "judged_by": result.judged_by,
        "passed": result.passed,
        "atol": result.atol,
        "rtol": result.rtol,
        **_worst(parities),
        "needed_atol": max((p.needed_atol for p in parities), default=None),
        "first_diverging_layer": result.first_diverging_layer,
    }


def optimize_document(bundle_dir: Path, passed: bool, requested: bool) -> Document:
    """``requested``: export.variants named any; if not, the manifest's outcomes are an earlier run's."""
    manifest = _manifest(bundle_dir)
    artifacts = {artifact.path: artifact for artifact in manifest.artifacts}
    variants = []
    for outcome in manifest.variants if requested else []:
        artifact = artifacts.get(outcome.path)
        gate = artifact.accuracy if artifact is not None else None
        variants.append(
            {
                "variant": outcome.variant,
                "path": outcome.path,
                "status": outcome.status,
                "reason": outcome.reason,
                "bytes": artifact.bytes if artifact is not None else None,
                "accuracy": gate.model_dump(mode="json") if gate is not None else None,
            }
        )
    return {"bundle": str(bundle_dir), "passed": passed, "variants": variants}


def inspect_document(bundle_dir: Path) -> Document:
    """The manifest's essentials; printed only once every checksum matched (inspect refuses the bundle if not)."""
    manifest = _manifest(bundle_dir)
    verdicts = {result.artifact: result.passed for result in manifest.verification}
    return {
        "bundle": str(bundle_dir),
        "name": manifest.name,
        "task": manifest.task,
        "format_version": manifest.format_version,
        "inputs": [spec.model_dump(mode="json") for spec in manifest.inputs],
        "outputs": [spec.model_dump(mode="json") for spec in manifest.outputs],
        "labels": manifest.labels,
        "artifacts": [
            {
                "path": a.path,
                "kind": a.kind,
                "precision": a.precision,
                "variant": a.variant,
                "opset": a.opset,
                "bytes": a.bytes,
                "sha256": a.sha256,
                "verified": verdicts.get(a.path),
            }
            for a in manifest.artifacts
        ],
        "metrics": manifest.metrics,
        "golden_samples": manifest.golden.samples,
        "provenance": manifest.provenance.model_dump(mode="json"),
    }


def conformance_document(bundle_dir: Path, passed: bool) -> Document:
    """From the manifest's ``conformance`` list, which the run has just replaced."""
    return {
        "bundle": str(bundle_dir),
        "passed": passed,
        "runtimes": [_runtime(result) for result in _manifest(bundle_dir).conformance],
    }


def _runtime(result: ConformanceResult) -> Document:
    return {
        "runtime": result.runtime,
        "engine": result.engine,
        "version": result.version,
        "artifact": result.artifact,
        "precision": result.precision,
        "status": result.status,
        "reason": result.reason,
        **_worst(list(result.outputs.values())),
        "latency": [{"batch": entry.batch, "median_ms": entry.median_ms} for entry in result.latency],
        "seconds": result.seconds,
    }


def bench_document(bundle_dir: Path, report: Path | None) -> Document:
    """From ``RUN_DIR/bench.json``: its rows are the table's, one per contender, batch size and thread count."""
    from torchport.bench.inference import read_result
    from torchport.bench.table import headline

    path = bundle_dir.parent / "bench.json"
    result = read_result(path)
    return {
        "bundle": str(bundle_dir),
        "machine": result.machine,
        "batches": result.batches,
        "threads": result.threads,
        "rows": [asdict(measurement) for measurement in result.measurements],
        "headline": headline(result),
        "notes": result.notes,
        "files": {"bench_json": str(path), "report": str(report) if report is not None else None},
    }
