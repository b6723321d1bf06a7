"""`python -m torchport.runtimes.conformance` (the code behind `torchport conformance`) end to end, and its rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.runtimes.conftest import IN_CI, require

from torchport.bundle.manifest import OutputParity, read_bundle, sha256_file
from torchport.errors import UsageError
from torchport.registry import RUNTIMES
from torchport.report.html import _conformance_section
from torchport.runtimes.base import HERE, Runtime, RuntimeMissing
from torchport.runtimes.conformance import choose, run_conformance, table
from torchport.runtimes.python import OPENVINO, PYTHON

TIMEOUT_S = 400


def conformance(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torchport.runtimes.conformance", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False, env=env)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_all_runtimes_pass_on_digits_and_land_in_manifest(aoti_digits: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(aoti_digits, bundle, ignore=shutil.ignore_patterns("runners"))
    proc = conformance(str(bundle), "--json", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((tmp_path / "c.json").read_text())
    statuses = {row["runtime"]: row["status"] for row in rows}
    assert set(statuses) == set(RUNTIMES.names())
    if IN_CI:
        assert set(statuses.values()) == {"passed"}, proc.stdout
    assert statuses["python"] == "passed"
    assert all(status in ("passed", "skipped") for status in statuses.values())
    assert "runtime" in proc.stdout and "PASSED" in proc.stdout
    saved = read_bundle(bundle).manifest.conformance
    assert [r.runtime for r in saved] == [row["runtime"] for row in rows]
    for name in statuses:
        if statuses[name] == "passed":
            assert (bundle / "runners" / name / "README.md").is_file()
    section = _conformance_section(read_bundle(bundle).manifest, bundle)  # what report.html shows
    assert "<h2 id='conformance'>Conformance</h2>" in section and f"torchport conformance {bundle}" in section
    assert all(f"<td>{name}</td>" in section for name in statuses)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tampered_golden_output_fails_naming_runtime_and_output(aoti_digits: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(aoti_digits, bundle, ignore=shutil.ignore_patterns("runners"))
    golden = bundle / "golden" / "logits.bin"
    values = np.fromfile(golden, dtype="<f4")
    values[3] += 0.5
    values.tofile(golden)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["golden"]["outputs"]:
        if entry["path"] == "golden/logits.bin":
            entry["sha256"] = sha256_file(golden)  # only the numbers are wrong, not the checksum
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = conformance(str(bundle), "--runtimes", "python")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED python model.onnx: output 'logits'" in proc.stdout
    assert "probabilities" not in proc.stdout.split("FAILED", 1)[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_explicit_runtime_without_node_is_exit_2(aoti_digits: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no node, no g++, no chromium on this PATH
    proc = conformance(str(aoti_digits), "--runtimes", "python,node", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "runtime 'node' cannot run here: node is not on PATH" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("c", "cc is not on PATH (apt-get install gcc)"),
        ("java", "java is not on PATH (apt-get install default-jdk-headless)"),
        ("go", "go is not on PATH (apt-get install golang-go)"),
        ("rust", "cargo is not on PATH (install Rust with rustup, or apt-get install cargo)"),
    ],
)
def test_explicit_compiled_runtime_without_its_toolchain_is_exit_2(
    name: str, message: str, aoti_digits: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = conformance(str(aoti_digits), "--runtimes", name, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"runtime '{name}' cannot run here: {message}" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_second_conformance_run_does_not_rebuild(aoti_digits: Path, tmp_path: Path) -> None:
    """Once built, the compiled runners are found by their sources' digest: the second run passes with every
    build tool replaced by a stub that fails and leaves a mark."""
    compiled = ["cpp", "c", "java", "go", "rust"]
    for name in compiled:
        require(RUNTIMES.get(name))
    chosen, _ = choose(",".join(compiled))
    first = run_conformance(aoti_digits, chosen, explicit=True, save=False)
    assert {r.status for r in first} == {"passed"}, [r.reason for r in first]
    java = shutil.which("java")
    assert java is not None
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "java").symlink_to(java)  # the JVM runs the jar; nothing may compile
    marks = tmp_path / "called"
    for tool in ("mvn", "javac", "go", "gcc", "cc", "make", "cargo", "rustc", "g++", "c++"):
        (bare / tool).write_text(f"#!/bin/sh\necho {tool} >> {marks}\nexit 1\n")
        (bare / tool).chmod(0o755)
    previous = os.environ["PATH"]
    os.environ["PATH"] = str(bare)
    try:
        second = run_conformance(aoti_digits, chosen, explicit=True, save=False)
    finally:
        os.environ["PATH"] = previous
    assert not marks.exists(), f"a build tool ran: {marks.read_text().split()}"
    assert [(r.runtime, r.status) for r in second] == [(r.runtime, "passed") for r in first], [r.reason for r in second]


def test_choose_rejects_unknown_runtime() -> None:
    with pytest.raises(UsageError, match="unknown runtime 'cobol'"):
        choose("python,cobol")
    chosen, explicit = choose("all")
    names = ["python", "openvino", "node", "browser", "cpp", "c", "java", "go", "rust"]
    assert [r.name for r in chosen] == names and not explicit


def test_missing_prerequisite_skips_under_all_and_refuses_when_named(exported_digits: Path) -> None:
    ghost = Runtime(
        name="ghost",
        engine="ghost",
        kinds=("onnx",),
        precisions=("fp32",),
        files=(),
        readme="",
        missing=lambda: "ghost is not installed",
        command=lambda *_: ["false"],
    )
    results = run_conformance(exported_digits / "bundle", [ghost], explicit=False, save=False)
    assert [(r.status, r.reason) for r in results] == [("skipped", "ghost is not installed")]
    with pytest.raises(RuntimeMissing, match="runtime 'ghost' cannot run here: ghost is not installed") as info:
        run_conformance(exported_digits / "bundle", [ghost], explicit=True, save=False)
    assert info.value.exit_code == 2
    assert "SKIPPED ghost" in table(results)


def test_table_shows_errors_and_latency() -> None:
    from torchport.bundle.manifest import ConformanceResult

    parity = OutputParity(max_abs=1e-6, max_rel=2e-6, needed_atol=0.0, argmax_agreement=1.0, passed=True)
    row = ConformanceResult(
        runtime="node",
        engine="onnxruntime-node",
        version="1.30.0",
        artifact="model.onnx",
        status="passed",
        atol=1e-4,
        rtol=1e-3,
        outputs={"logits": parity},
        latency=[{"batch": 1, "median_ms": 0.25, "iterations": 20}],  # type: ignore[list-item]
    )
    text = table([row])
    assert "1.00e-06" in text and "PASSED" in text and "ms@1" in text and "0.250" in text


def test_a_v2_client_needs_a_server() -> None:
    with pytest.raises(UsageError, match="'csharp' is a v2 client: give --server URL"):
        choose("python,csharp")
    assert [r.name for r in choose("all")[0]] == RUNTIMES.names()
    with_server = [r.name for r in choose("all", server="local")[0]]
    assert with_server == [*RUNTIMES.names(), "csharp", "r", "java-v2"]


def test_runtimes_run_in_the_registrys_order() -> None:
    """Cheapest first: the Python runners, then Node and the browser, then the compiled ones."""
    assert RUNTIMES.names() == ["python", "openvino", "node", "browser", "cpp", "c", "java", "go", "rust"]
    with pytest.raises(UsageError, match=r"^--runtimes: unknown runtime 'pyhton'; choose from all, python, openvino"):
        choose("pyhton")


@pytest.mark.parametrize("runtime", [PYTHON, OPENVINO], ids=lambda r: r.name)
def test_python_runtimes_ship_their_standalone_script(runtime: Runtime) -> None:
    """The runner script and rawio.py beside it, with a README that says how to run them from the bundle."""
    script, helper = runtime.files
    assert helper == "rawio.py" and f"python {script} BUNDLE OUT_DIR" in runtime.readme
    assert all((HERE / name).is_file() for name in runtime.files)
