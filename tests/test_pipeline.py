"""`torchport run` with no argument is the demo: the whole pipeline on the bundled digits CNN."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_default_run_makes_a_verified_bundle_that_classifies_raw_digits(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "torchport.cli", "run", "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / "run"
    for stage in ("train", "export", "verify", "optimize", "bench", "report"):
        assert f"time {stage}" in result.stdout
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    assert all(v["passed"] for v in manifest["verification"])
    assert {a["kind"] for a in manifest["artifacts"]} >= {"onnx"}
    report = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in report and "Parity" in report and "Variants" in report
    assert {a["precision"] for a in manifest["artifacts"]} >= {"fp32", "int8", "fp16"}
    # The short benchmark at the end: every default cell, torch.compile among the contenders, GFLOP/s filled in.
    bench = json.loads((run_dir / "bench.json").read_text())
    assert bench["batches"] == [1, 8, 64] and bench["threads"][0] == 1
    contenders = {m["contender"] for m in bench["measurements"]}
    assert {"pytorch eager", "torch.compile", "ort fp32", "ort int8", "openvino fp32"} <= contenders, contenders
    assert all(m["gflops"] > 0 for m in bench["measurements"])
    assert "Inference benchmark" in report and "GFLOP/s per core" in result.stdout

    # A plain ONNX Runtime session, raw sklearn images in (no preprocessing): the graph normalises itself.
    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None, :, :]
    session = ort.InferenceSession(str(run_dir / "bundle" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(None, {"input": images})
    accuracy = float((logits.argmax(axis=1) == digits.target).mean())
    assert accuracy >= 0.95, accuracy
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in makefile and "torchport run" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_packaged_default_config_is_the_digits_example() -> None:
    packaged = ROOT / "src" / "torchport" / "examples" / "digits.yaml"
    assert packaged.read_text() == (ROOT / "examples" / "digits.yaml").read_text()
