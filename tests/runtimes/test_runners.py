"""Every runner on the digits CNN and the iris MLP; refusals of bad checksums, paths that leave the bundle and golden
inputs that do not match the manifest; the compiled runners' READMEs followed as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.runtimes.conftest import assert_out_matches_golden, error_line, follow_readme, require

from torchport.bundle.manifest import read_bundle, sha256_file
from torchport.registry import RUNTIMES as RUNTIME_REGISTRY
from torchport.runtimes.base import install_files
from torchport.runtimes.conformance import run_conformance

RUNTIMES = RUNTIME_REGISTRY.names()
TIMEOUT_S = 180


def _run_runner(name: str, bundle: Path, artifact: str, out: Path) -> subprocess.CompletedProcess[str]:
    runtime = RUNTIME_REGISTRY.get(name)
    runner_dir = install_files(runtime, bundle)
    argv = runtime.command(bundle, runner_dir, artifact, out)
    env = {**os.environ, **runtime.env()}
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False, env=env)


def _copy_without_runners(source: Path, tmp_path: Path) -> Path:
    """A private copy of a fixture bundle to tamper with; its runners are installed afresh by each run."""
    bundle = tmp_path / "bundle"
    shutil.copytree(source, bundle, ignore=shutil.ignore_patterns("runners"))
    return bundle


def _artifact_for(name: str) -> str:
    return "model.pt2" if name == "cpp" else "model.onnx"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", RUNTIMES)
def test_runner_matches_golden(name: str, any_bundle: Path) -> None:
    runtime = RUNTIME_REGISTRY.get(name)
    require(runtime)
    results = run_conformance(any_bundle, [runtime], explicit=True, save=False)
    assert [r.status for r in results] == ["passed"], [r.reason for r in results]
    result = results[0]
    golden = {t.name for t in read_bundle(any_bundle).manifest.golden.outputs}
    assert set(result.outputs) == golden
    assert result.version and result.latency and result.latency[0].batch == 1
    assert all(p.argmax_agreement == 1.0 for p in result.outputs.values())


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", RUNTIMES)
def test_runner_refuses_bad_checksum_and_escaping_path(name: str, aoti_digits: Path, tmp_path: Path) -> None:
    require(RUNTIME_REGISTRY.get(name))
    bundle = _copy_without_runners(aoti_digits, tmp_path)
    artifact = _artifact_for(name)
    if not (bundle / artifact).is_file():
        pytest.fail(f"the fixture bundle has no {artifact}")
    with open(bundle / artifact, "ab") as handle:
        handle.write(b"\0")
    proc = _run_runner(name, bundle, artifact, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert f"'{artifact}' fails its checksum" in error_line(proc)
    assert not (tmp_path / "out" / "result.json").exists()

    shutil.copyfile(aoti_digits / artifact, bundle / artifact)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["golden"]["inputs"][0]["path"] = "../golden/input.bin"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = _run_runner(name, bundle, artifact, tmp_path / "out2")
    assert proc.returncode == 2, proc.stderr
    assert "'../golden/input.bin' is absolute or contains '..'" in error_line(proc)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_python_runner_outputs_are_raw_little_endian(aoti_iris: Path, tmp_path: Path) -> None:
    proc = _run_runner("python", aoti_iris, "model.onnx", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["runtime"] == "onnxruntime" and result["artifact"] == "model.onnx"
    assert_out_matches_golden(aoti_iris, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", RUNTIMES)
def test_runner_refuses_inputs_that_do_not_match_the_manifest(name: str, aoti_digits: Path, tmp_path: Path) -> None:
    require(RUNTIME_REGISTRY.get(name))
    bundle = _copy_without_runners(aoti_digits, tmp_path)
    original = json.loads((bundle / "manifest.json").read_text())
    samples = original["golden"]["samples"]
    cases = {
        "dtype": ("int32", "input 'input': the manifest declares dtype int32, the golden tensor is float32"),
        "shape": (
            ["batch", 1, 8, 9],
            f"input 'input': the manifest declares shape [batch, 1, 8, 9], the golden tensor is [{samples}, 1, 8, 8]",
        ),
    }
    for key, (value, message) in cases.items():
        manifest = json.loads(json.dumps(original))
        manifest["inputs"][0][key] = value
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        proc = _run_runner(name, bundle, _artifact_for(name), tmp_path / f"out-{key}")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in error_line(proc)
        assert not (tmp_path / f"out-{key}" / "result.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", RUNTIMES)
def test_runner_refuses_an_output_name_that_is_not_a_plain_file_name(
    name: str, aoti_digits: Path, tmp_path: Path
) -> None:
    """An output named '../escape' would be written as OUT_DIR/../escape.bin: every runner refuses it instead.

    The ONNX runners take output names from the model, so the graph's output is renamed; the C++ runner takes them
    from the manifest (model.pt2 fixes its own), so there the manifest's output name is changed."""
    require(RUNTIME_REGISTRY.get(name))
    bundle = _copy_without_runners(aoti_digits, tmp_path)
    artifact = _artifact_for(name)
    if not (bundle / artifact).is_file():
        pytest.fail(f"the fixture bundle has no {artifact}")
    manifest = json.loads((bundle / "manifest.json").read_text())
    old = manifest["outputs"][0]["name"]
    bad = "../x" if name == "cpp" else "../escape"
    if name != "cpp":
        import onnx

        model = onnx.load(str(bundle / artifact))
        graph = model.graph
        assert old in [o.name for o in graph.output]
        for value in [*graph.output, *graph.value_info]:
            if value.name == old:
                value.name = bad
        for node in graph.node:
            node.output[:] = [bad if n == old else n for n in node.output]
            node.input[:] = [bad if n == old else n for n in node.input]
        onnx.save(model, str(bundle / artifact))
        entry = next(a for a in manifest["artifacts"] if a["path"] == artifact)
        entry["sha256"] = sha256_file(bundle / artifact)
        entry["bytes"] = (bundle / artifact).stat().st_size
    manifest["outputs"][0]["name"] = bad
    for golden in manifest["golden"]["outputs"]:
        if golden["name"] == old:
            golden["name"] = bad
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    proc = _run_runner(name, bundle, artifact, out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"output name '{bad}' is not a plain file name" in error_line(proc)
    assert not (out / "result.json").exists()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) in ([], ["out"])
    assert not list(tmp_path.glob("**/escape.bin")) and not list(tmp_path.glob("**/x.bin"))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["c", "java", "go", "rust"])
def test_following_the_runner_readme_reproduces_golden(name: str, aoti_digits: Path, tmp_path: Path) -> None:
    """Copy the bundle elsewhere and type only what runners/<name>/README.md says, with no torchport around."""
    require(RUNTIME_REGISTRY.get(name))
    bundle = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(aoti_digits, bundle)
    proc = follow_readme(bundle, bundle / "runners" / name / "README.md", {})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert_out_matches_golden(bundle, bundle / "out")
