"""Bundles with both ONNX and AOTInductor artifacts (digits CNN, iris MLP), cached compiled runners, a guard
against Chromium processes left behind, and a runner's or client's README followed as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import BUILD_DIR, EXAMPLES, quiet_console

from torchport.bundle.manifest import read_bundle
from torchport.config import load_config
from torchport.runtimes.base import Runtime

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(runtime: Runtime) -> None:
    """Skip (outside CI) or fail (in CI) when the runtime's prerequisite is missing."""
    reason = runtime.missing()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"runtime '{runtime.name}' is required in CI: {reason}")
    pytest.skip(f"runtime '{runtime.name}': {reason}")


def _export(tmp_path_factory: pytest.TempPathFactory, config: str, overrides: list[str]) -> Path:
    from torchport.pipeline import export_stage
    from torchport.train.loop import train

    run_dir = tmp_path_factory.mktemp(Path(config).stem) / "run"
    train(load_config(EXAMPLES / config, overrides), run_dir, console=quiet_console())
    export_stage(run_dir, quiet_console())
    return run_dir / "bundle"


@pytest.fixture(scope="session")
def aoti_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN, 2 epochs, exported to ONNX and model.pt2 (the .pt2 only where a C++ compiler is found)."""
    return _export(tmp_path_factory, "digits.yaml", ["train.epochs=2", "export.aoti=auto"])


@pytest.fixture(scope="session")
def aoti_iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular bundle: the iris MLP, 5 epochs, ONNX and model.pt2."""
    return _export(tmp_path_factory, "iris_mlp.yaml", ["train.epochs=5", "export.aoti=auto"])


@pytest.fixture(params=["digits", "iris"])
def any_bundle(request: pytest.FixtureRequest) -> Path:
    name = "aoti_digits" if request.param == "digits" else "aoti_iris"
    bundle: Path = request.getfixturevalue(name)
    return bundle


def _our_chromiums() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"torchport-chromium-" in cmdline:
            found.append(int(proc.name))
    return found


@pytest.fixture(autouse=True)
def no_leftover_browser() -> Iterator[None]:
    """Fail a test that leaves a Chromium of ours running (and end those processes, by id)."""
    before = set(_our_chromiums())
    yield
    left = [pid for pid in _our_chromiums() if pid not in before]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"Chromium processes left running: {left}"


def readme_commands(readme: Path) -> str:
    """The one ```sh block of a runner's or client's README: the commands a user types in the bundle folder."""
    blocks = re.findall(r"```sh\n(.*?)```", readme.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, f"{readme} should show exactly one sh block"
    return str(blocks[0])


def follow_readme(bundle: Path, readme: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a README's commands with bash in ``bundle`` as a user would: no torchport variables, python3 with
    onnxruntime on PATH (the venv's), cargo's own target cache shared with the conformance builds."""
    clean = {k: v for k, v in os.environ.items() if k not in ("ORT_DYLIB_PATH", "TORCHPORT_BUILD_DIR")}
    clean["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"
    clean["CARGO_TARGET_DIR"] = str(BUILD_DIR / "rust-target")  # dependencies compile once per machine
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_commands(readme)],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
        env={**clean, **env},
        stdin=subprocess.DEVNULL,
    )


def assert_out_matches_golden(bundle: Path, out: Path) -> None:
    """``out/result.json`` names raw float32 outputs equal to the bundle's golden outputs (atol 1e-4, rtol 1e-3)."""
    result = json.loads((out / "result.json").read_text())
    assert result["latency"][0]["batch"] == 1
    loaded = read_bundle(bundle)
    for golden in loaded.manifest.golden.outputs:
        entry = next(o for o in result["outputs"] if o["name"] == golden.name)
        got = np.fromfile(out / entry["path"], dtype="<f4").reshape(entry["shape"])
        np.testing.assert_allclose(got, loaded.read_tensor(golden), atol=1e-4, rtol=1e-3)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """A refusing runner's or client's whole stderr, which must be exactly one 'error: ...' line (and a failure)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]
