"""``--json`` on validate, train, verify, inspect, conformance, bench and optimize: stdout is one JSON document
with the keys the README lists, also when a check fails (exit 1) or the verb cannot run (exit 2, 3).

The verbs run in this process (``main([...])``, their stdout captured); the last tests run the real CLI in a
subprocess, where a child process or a C library could write to stdout too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import numpy_helper

from torchport.bench.inference import EAGER, ORT_FP32
from torchport.bundle.manifest import read_bundle, sha256_file
from torchport.cli import main
from torchport.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "examples" / "digits.yaml")

# The documented keys (README, Machine-readable output): a document may grow keys, never lose these.
VALIDATE_KEYS = {"ok", "config", "name", "model", "resolved"}
TRAIN_KEYS = {"name", "run_dir", "metric", "best", "best_epoch", "epochs", "steps", "train_seconds"}
TRAIN_KEYS |= {"samples_per_second", "world_size", "checkpoints", "summary"}
PARITY_KEYS = {"artifact", "runtime", "reference", "judged_by", "passed", "atol", "rtol", "max_abs", "max_rel"}
PARITY_KEYS |= {"argmax_agreement", "needed_atol", "first_diverging_layer"}
INSPECT_KEYS = {"bundle", "name", "task", "format_version", "inputs", "outputs", "labels", "artifacts", "metrics"}
INSPECT_KEYS |= {"golden_samples", "provenance"}
ARTIFACT_KEYS = {"path", "kind", "precision", "variant", "opset", "bytes", "sha256", "verified"}
RUNTIME_KEYS = {"runtime", "engine", "version", "artifact", "precision", "status", "reason", "max_abs", "max_rel"}
RUNTIME_KEYS |= {"argmax_agreement", "latency", "seconds"}
BENCH_KEYS = {"bundle", "machine", "batches", "threads", "rows", "headline", "notes", "files"}
ROW_KEYS = {"contender", "runtime", "artifact", "batch", "threads", "median_ms", "p99_ms", "throughput"}
ROW_KEYS |= {"vs_eager", "vs_ort_fp32", "max_abs_diff", "argmax_agreement", "stable"}
VARIANT_KEYS = {"variant", "path", "status", "reason", "bytes", "accuracy"}


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    """Exit code, the parsed document (json.loads refuses anything else on stdout) and stderr."""
    code = main([*args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def assert_error_document(document: dict[str, Any], exit_code: int, *fragments: str) -> None:
    assert set(document) == {"error", "exit_code"} and document["exit_code"] == exit_code, document
    for fragment in fragments:
        assert fragment in document["error"], document


def tamper_weights(bundle: Path) -> None:
    """Change one weight of model.onnx and write a matching checksum: parity, not the checksum, must catch it."""
    path = bundle / "model.onnx"
    model = onnx.load(str(path))
    first = next(i for i in model.graph.initializer if "layers.2" in i.name and "weight" in i.name)
    values = numpy_helper.to_array(first).copy()
    values.flat[0] += 0.5
    first.CopyFrom(numpy_helper.from_array(values, first.name))
    onnx.save(model, str(path))
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["path"] == "model.onnx")
    entry["sha256"], entry["bytes"] = sha256_file(path), path.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def configure(run_dir: Path, **export: object) -> None:
    """Rewrite the run's export settings, as a user editing RUN_DIR/config.yaml before `optimize` would."""
    config = load_config(run_dir / "config.yaml", [f"export.{k}={json.dumps(v)}" for k, v in export.items()])
    (run_dir / "config.yaml").write_text(config.to_yaml())


# --- validate and train -------------------------------------------------------------------------------------


def test_validate_prints_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, document, err = run_json(capsys, "validate", DIGITS, "train.epochs=2")
    assert code == 0, err
    assert set(document) >= VALIDATE_KEYS and document["ok"] is True
    assert document["name"] == "digits" and document["config"] == DIGITS
    assert document["resolved"]["train"]["epochs"] == 2  # the override applied
    assert "(1, 8, 8) -> (10,)" in document["model"]
    assert "is valid" not in err  # a quick verb: the document says it all


def test_a_bad_config_is_an_error_document_and_the_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cfg.yaml").write_text("model: {layers: [relu]}\ntrain: {epohcs: 3}\n")
    code, document, err = run_json(capsys, "validate", str(tmp_path / "cfg.yaml"))
    assert code == 2
    assert_error_document(document, 2, "train.epohcs: unknown key")
    assert err.strip() == f"error: {document['error']}"


def test_train_prints_the_summary_and_checkpoint_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code, document, err = run_json(capsys, "train", DIGITS, "train.epochs=1", "--run-dir", str(run_dir))
    assert code == 0, err
    assert set(document) >= TRAIN_KEYS
    assert (document["name"], document["run_dir"], document["epochs"], document["best_epoch"]) == (
        "digits",
        str(run_dir),
        1,
        1,
    )
    assert document["metric"] == "val_accuracy" and 0.0 <= document["best"] <= 1.0
    assert set(document["checkpoints"]) == {"best", "last"}
    assert all(Path(path).is_file() for path in document["checkpoints"].values())
    assert json.loads(Path(document["summary"]).read_text())["steps"] == document["steps"]
    assert "trained digits" in err  # what it says for people went to stderr


# --- verify, inspect -----------------------------------------------------------------------------------------


def test_verify_prints_each_artifacts_parity(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = digits_run / "bundle"
    code, document, err = run_json(capsys, "verify", str(bundle))
    assert code == 0, err
    assert document["bundle"] == str(bundle) and document["passed"] is True
    (artifact,) = document["artifacts"]
    assert set(artifact) >= PARITY_KEYS
    assert artifact["artifact"] == "model.onnx" and artifact["passed"] is True
    assert 0.0 <= artifact["max_abs"] <= artifact["atol"] and artifact["argmax_agreement"] == 1.0
    assert "verified 1 artifact(s)" in err


def test_verify_failing_a_check_is_passed_false_and_exit_1(
    digits_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = digits_run / "bundle"
    tamper_weights(bundle)
    code, document, err = run_json(capsys, "verify", str(bundle))
    assert code == 1, err
    assert document["passed"] is False
    (artifact,) = document["artifacts"]
    assert artifact["passed"] is False and artifact["max_abs"] > artifact["atol"]
    assert artifact["first_diverging_layer"].startswith("model.layers[2] (conv2d)")


def test_inspect_prints_the_manifest_essentials(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = digits_run / "bundle"
    code, document, err = run_json(capsys, "inspect", str(bundle))
    assert code == 0, err
    assert set(document) >= INSPECT_KEYS
    manifest = read_bundle(bundle).manifest
    assert (document["name"], document["task"]) == (manifest.name, "classification")
    assert document["inputs"] == [{"name": manifest.inputs[0].name, "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert document["labels"] == manifest.labels and document["golden_samples"] == manifest.golden.samples
    (artifact,) = document["artifacts"]
    assert set(artifact) >= ARTIFACT_KEYS
    assert (artifact["path"], artifact["sha256"], artifact["verified"]) == (
        "model.onnx",
        manifest.artifacts[0].sha256,
        None,
    )
    assert document["provenance"]["config_name"] == "digits"
    assert "checksums" not in err  # a quick verb: the document says it all


@pytest.mark.parametrize("fault", ["checksum", "missing"])
def test_inspect_that_cannot_read_the_bundle_is_an_error_document(
    digits_run: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    bundle = digits_run / "bundle"
    if fault == "checksum":
        (bundle / "model.onnx").write_bytes(b"other bytes")
    else:
        bundle = digits_run / "no-bundle-here"
    code, document, _ = run_json(capsys, "inspect", str(bundle))
    assert code == 2
    assert_error_document(document, 2, "model.onnx" if fault == "checksum" else "no-bundle-here")


def test_an_internal_error_is_an_error_document_and_exit_3(
    digits_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchport.bundle import inspect

    def planted(*_: object) -> None:
        raise RuntimeError("a bug planted in the stage")

    monkeypatch.setattr(inspect, "print_bundle", planted)
    code, document, err = run_json(capsys, "inspect", str(digits_run / "bundle"))
    assert code == 3
    assert_error_document(document, 3, "internal error: RuntimeError: a bug planted in the stage")
    assert err.startswith("internal error: RuntimeError") and "--debug" in err


# --- bench, optimize -----------------------------------------------------------------------------------------


def test_bench_prints_the_table_rows(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = digits_run / "bundle"
    options = ["--batch-sizes", "1", "--threads", "1", "--iterations", "3", "--budget", "0.05", "--no-compile"]
    code, document, err = run_json(capsys, "bench", str(bundle), *options)
    assert code == 0, err
    assert set(document) >= BENCH_KEYS
    assert (document["batches"], document["threads"]) == ([1], [1])
    assert all(set(row) >= ROW_KEYS for row in document["rows"])
    contenders = {row["contender"] for row in document["rows"]}
    assert {EAGER, ORT_FP32} <= contenders, contenders
    assert document["files"]["bench_json"] == str(digits_run / "bench.json")
    on_disk = json.loads((digits_run / "bench.json").read_text())
    assert [row["median_ms"] for row in document["rows"]] == [m["median_ms"] for m in on_disk["measurements"]]
    assert "headline" in err  # the ratio table and its headline went to stderr


def test_optimize_prints_variants_kept_and_refused_with_their_gates(
    digits_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = digits_run / "bundle"
    configure(digits_run, variants=["int8"], latency_iterations=0)
    code, document, err = run_json(capsys, "optimize", str(bundle))
    assert code == 0, err
    assert document["bundle"] == str(bundle) and document["passed"] is True
    (kept,) = document["variants"]
    assert set(kept) >= VARIANT_KEYS
    assert (kept["variant"], kept["path"], kept["status"]) == ("int8", "model.int8.onnx", "kept")
    assert kept["accuracy"]["passed"] is True and kept["bytes"] > 0

    configure(digits_run, max_accuracy_drop=-1, strict_variants=True)  # a gate no variant can pass
    code, document, err = run_json(capsys, "optimize", str(bundle))
    assert code == 1, err
    (refused,) = document["variants"]
    assert document["passed"] is False and refused["status"] == "refused" and refused["reason"]

    configure(digits_run, variants=[])  # nothing asked: no outcome, not the previous run's
    code, document, err = run_json(capsys, "optimize", str(bundle))
    assert (code, document["passed"], document["variants"]) == (0, True, []), err


# --- the real CLI in a subprocess ----------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torchport.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_conformance_prints_each_runtime(digits_run: Path) -> None:
    bundle = digits_run / "bundle"
    done = cli("conformance", str(bundle), "--runtimes", "python", "--json", "--json-out", str(digits_run / "c.json"))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["bundle"] == str(bundle) and document["passed"] is True
    (python,) = document["runtimes"]
    assert set(python) >= RUNTIME_KEYS
    assert (python["runtime"], python["status"], python["artifact"]) == ("python", "passed", "model.onnx")
    assert python["latency"] and all(entry["median_ms"] > 0 for entry in python["latency"])
    assert "PASSED" in done.stderr  # the table, on stderr
    rows = json.loads((digits_run / "c.json").read_text())  # --json-out: the results list, as --json FILE wrote it
    assert [row["runtime"] for row in rows] == ["python"]


@pytest.mark.slow
def test_conformance_failing_a_runtime_is_passed_false_and_exit_1(digits_run: Path) -> None:
    bundle = digits_run / "bundle"
    tamper_weights(bundle)  # the golden outputs are PyTorch's; the model no longer matches them
    done = cli("conformance", str(bundle), "--runtimes", "python", "--json")
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    assert document["passed"] is False and document["runtimes"][0]["status"] == "failed"


@pytest.mark.slow
def test_verify_in_a_real_process_has_only_the_document_on_stdout(digits_run: Path) -> None:
    done = cli("verify", str(digits_run / "bundle"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["passed"] is True
    assert "parity against the reference" in done.stderr


@pytest.mark.slow
def test_a_usage_error_with_json_is_an_error_document(tmp_path: Path) -> None:
    done = cli("verify", "--json")
    assert done.returncode == 2
    assert_error_document(json.loads(done.stdout), 2, "bundle")
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_train_under_torchrun_prints_one_document_from_rank_0(tmp_path: Path) -> None:
    """Both ranks run `torchport train --json` (the launcher hands the option over); rank 0 alone prints."""
    from tests.train.procs import kill_group

    config = tmp_path / "ddp.yaml"
    config.write_text(
        "name: ddp\ndata: {source: digits, batch_size: 32}\n"
        "model: {layers: [flatten, {linear: {out_features: classes}}]}\ntrain: {epochs: 1, threads: 1}\n"
    )
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torchport.cli", "train", str(config), "--nproc-per-node", "2"]
    proc = subprocess.Popen(
        [*command, "--run-dir", str(run_dir), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the agent and both workers go with kill_group
    )
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        kill_group(proc)  # type: ignore[arg-type]
    assert proc.returncode == 0, err[-3000:]
    document = json.loads(out)
    assert document["world_size"] == 2 and Path(document["run_dir"]) == run_dir.resolve()
    assert set(document) >= TRAIN_KEYS
