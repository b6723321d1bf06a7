"""Verification passes for a faithful export and fails, naming the diverging layer, for a broken one."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from torchport.bundle.manifest import sha256_file
from torchport.verify.parity import Tolerance, compare

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def test_compare_reports_errors_and_needed_tolerance() -> None:
    reference = np.array([[1.0, 2.0], [3.0, -4.0]], dtype=np.float32)
    candidate = reference + np.array([[0.0, 0.01], [0.0, 0.0]], dtype=np.float32)
    result = compare(candidate, reference, Tolerance(atol=1e-4, rtol=1e-3), argmax=True)
    assert not result.passed
    assert abs(result.max_abs - 0.01) < 1e-6
    assert abs(result.max_rel - 0.005) < 1e-6
    assert abs(result.needed_atol - (0.01 - 1e-3 * 2.0)) < 1e-6
    assert result.argmax_agreement == 1.0
    assert compare(candidate, reference, Tolerance(atol=result.needed_atol + 1e-7, rtol=1e-3), argmax=False).passed


def test_nan_and_shape_mismatch_fail() -> None:
    reference = np.ones((2, 3), dtype=np.float32)
    assert not compare(np.full((2, 3), np.nan, dtype=np.float32), reference, Tolerance(), argmax=False).passed
    assert not compare(np.ones((3, 2), dtype=np.float32), reference, Tolerance(), argmax=False).passed


def test_faithful_export_verifies(digits_run: Path, cli: CliRunner) -> None:
    result = cli("verify", str(digits_run / "bundle"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((digits_run / "bundle" / "manifest.json").read_text())
    (verification,) = manifest["verification"]
    assert verification["passed"] and verification["reference"] == "pytorch"
    labels = [check["inputs"] for check in verification["checks"]]
    assert labels == ["validation", "random batch 1", "random batch 7", "random batch 64", "golden"]
    assert [c["batch"] for c in verification["checks"]][1:4] == [1, 7, 64]


def _tamper_initializer(onnx_path: Path, weight_name: str) -> None:
    model = onnx.load(str(onnx_path))
    for initializer in model.graph.initializer:
        if initializer.name == weight_name:
            values = numpy_helper.to_array(initializer).copy()
            values.flat[0] += 0.5
            initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
            break
    else:
        raise AssertionError(f"no initializer {weight_name}: {[i.name for i in model.graph.initializer]}")
    onnx.save(model, str(onnx_path))


def test_broken_artifact_fails_and_names_the_diverging_layer(digits_run: Path, cli: CliRunner) -> None:
    bundle = digits_run / "bundle"
    onnx_path = bundle / "model.onnx"
    names = [i.name for i in onnx.load(str(onnx_path)).graph.initializer]
    second_conv = next(name for name in names if "layers.2" in name and "weight" in name)
    _tamper_initializer(onnx_path, second_conv)
    # A faulty exporter would write a matching checksum: the parity check, not the checksum, must catch it.
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][0]["sha256"] = sha256_file(onnx_path)
    manifest["artifacts"][0]["bytes"] = onnx_path.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    result = cli("verify", str(bundle))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout
    assert "first diverging layer: model.layers[2] (conv2d)" in result.stdout
    verification = json.loads((bundle / "manifest.json").read_text())["verification"][0]
    assert not verification["passed"]
    assert verification["first_diverging_layer"].startswith("model.layers[2] (conv2d)")
