"""`torchport optimize`: every variant built, gated on accuracy, measured, and recorded in the manifest; refused
and failed ones left out with one line each."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from torchport.bundle.inspect import print_bundle
from torchport.bundle.manifest import read_bundle
from torchport.config import load_config
from torchport.errors import BundleError
from torchport.pipeline import optimize_stage
from torchport.verify.bundle import verify_bundle

ROOT = Path(__file__).resolve().parents[2]


def configure(run_dir: Path, **export: object) -> None:
    """Rewrite the run's config.yaml with export settings (fast latency measurement unless told otherwise)."""
    overrides = {"latency_iterations": 2, **export}
    config = load_config(run_dir / "config.yaml", [f"export.{k}={json.dumps(v)}" for k, v in overrides.items()])
    (run_dir / "config.yaml").write_text(config.to_yaml())


def optimize(run_dir: Path) -> tuple[bool, str]:
    console = Console(record=True, width=200)
    passed = optimize_stage(run_dir / "bundle", console)
    return passed, console.export_text()


def test_digits_bundle_carries_int8_fp16_and_ort_variants_within_the_gate(digits_run: Path) -> None:
    configure(digits_run)
    passed, text = optimize(digits_run)
    assert passed, text
    manifest = read_bundle(digits_run / "bundle").manifest
    by_variant = {a.variant: a for a in manifest.artifacts}
    assert {"optimized", "int8", "fp16", "ort"} <= set(by_variant), text
    fp32 = by_variant[None]
    int8, fp16, ort = by_variant["int8"], by_variant["fp16"], by_variant["ort"]
    assert (int8.kind, int8.precision, fp16.precision, ort.kind) == ("onnx", "int8", "fp16", "ort")
    assert fp32.bytes >= 3 * int8.bytes, (fp32.bytes, int8.bytes)
    assert fp32.bytes > 1.8 * fp16.bytes
    for artifact in manifest.artifacts:
        assert artifact.accuracy is not None and artifact.accuracy.passed
        assert artifact.accuracy.reference == fp32.accuracy.value  # type: ignore[union-attr]
        assert {(x.batch, x.threads) for x in artifact.latency} == {(1, 1), (1, 2), (64, 1), (64, 2)}
        assert all(0 < x.median_ms <= x.p99_ms for x in artifact.latency)
    assert int8.recipe["mode"] == "static" and int8.recipe["format"] == "QDQ"
    assert all(o.status == "kept" for o in manifest.variants)

    verdicts = {v.artifact: v for v in manifest.verification}
    assert all(verdicts[a.path].passed for a in manifest.artifacts if a.variant)
    assert verdicts["model.int8.onnx"].judged_by == "accuracy" and verdicts["model.ort"].judged_by == "parity"

    # the published schema still describes the manifest, and `torchport verify` passes every variant again
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    jsonschema.validate(json.loads((digits_run / "bundle" / "manifest.json").read_text()), schema)
    _, results = verify_bundle(digits_run / "bundle")
    assert len(results) == 5 and all(r.passed for r in results)

    console = Console(record=True, width=220)
    print_bundle(digits_run / "bundle", console)
    shown = console.export_text()
    assert "model.int8.onnx" in shown and "x smaller" in shown and "b64 t2" in shown


def test_impossible_gate_refuses_the_variant_with_one_clear_line(digits_run: Path) -> None:
    configure(digits_run, variants=["int8", "ort"], max_accuracy_drop=-1, latency_iterations=0)
    passed, text = optimize(digits_run)
    assert passed  # refusals are reported; only export.strict_variants makes them fail the stage
    line = next(line for line in text.splitlines() if line.startswith("refused model.int8.onnx"))
    assert "refused model.int8.onnx: val_accuracy 0." in line and "fp32 0." in line and "(max drop -1)" in line
    assert "refused model.ort: val_accuracy" in text
    bundle = read_bundle(digits_run / "bundle")
    assert [a.path for a in bundle.manifest.artifacts] == ["model.onnx"]
    assert not (digits_run / "bundle" / "model.int8.onnx").exists()
    assert {o.status for o in bundle.manifest.variants} == {"refused"}

    configure(digits_run, strict_variants=True)
    assert optimize(digits_run)[0] is False


def test_rerun_replaces_variants_and_dynamic_int8_is_selectable(digits_run: Path) -> None:
    configure(digits_run, variants=["int8"], latency_iterations=0)
    optimize(digits_run)
    configure(digits_run, variants=["int8"], int8_mode="dynamic", per_channel=True)
    passed, text = optimize(digits_run)
    assert passed, text
    artifacts = read_bundle(digits_run / "bundle").manifest.artifacts
    assert [a.path for a in artifacts] == ["model.onnx", "model.int8.onnx"]
    assert artifacts[1].recipe["mode"] == "dynamic"


def test_a_tampered_variant_fails_its_checksum(digits_run: Path) -> None:
    configure(digits_run, variants=["fp16"], latency_iterations=0)
    optimize(digits_run)
    target = digits_run / "bundle" / "model.fp16.onnx"
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match=r"model\.fp16\.onnx"):
        verify_bundle(digits_run / "bundle")


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_methods(digits_run: Path, method: str) -> None:
    configure(digits_run, variants=["int8"], calibration_method=method, calibration_samples=64, latency_iterations=0)
    passed, text = optimize(digits_run)
    int8 = read_bundle(digits_run / "bundle").artifact("onnx", "int8")
    assert passed and int8 is not None, text
    assert int8.recipe["calibration"] == method and int8.recipe["calibration_samples"] == 64
