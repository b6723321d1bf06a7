"""Shared fixtures: a small trained and exported digits run, made once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from torchport.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Kept between sessions (gitignored): compiled runners and clients are keyed by their sources' digests.
BUILD_DIR = ROOT / "build" / "runners"


def quiet_console() -> Console:
    return Console(quiet=True)


def _trained_and_exported(tmp_path_factory: pytest.TempPathFactory, example: str) -> Path:
    """``examples/<example>.yaml`` trained for 3 epochs and exported to ONNX (no .pt2, to keep the session fast)."""
    from torchport.pipeline import export_stage
    from torchport.train.loop import train

    run_dir = tmp_path_factory.mktemp(example) / "run"
    config = load_config(EXAMPLES / f"{example}.yaml", ["train.epochs=3", "export.aoti=false"])
    train(config, run_dir, console=quiet_console())
    export_stage(run_dir, quiet_console())
    return run_dir


@pytest.fixture(scope="session")
def exported_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN, trained briefly and exported."""
    return _trained_and_exported(tmp_path_factory, "digits")


@pytest.fixture(scope="session")
def exported_houses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/tabular_csv.yaml (a CSV with a categorical column), trained briefly and exported."""
    return _trained_and_exported(tmp_path_factory, "tabular_csv")


@pytest.fixture(scope="session")
def exported_iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, different model: the iris MLP, trained briefly and exported."""
    return _trained_and_exported(tmp_path_factory, "iris_mlp")


@pytest.fixture(scope="session")
def digits_with_int8(exported_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's digits run with only the INT8 variant added (`torchport optimize`, no timing)."""
    from torchport.pipeline import optimize_stage

    run = tmp_path_factory.mktemp("digits_int8") / "run"
    shutil.copytree(exported_digits, run)
    config = load_config(run / "config.yaml", ['export.variants=["int8"]', "export.latency_iterations=0"])
    (run / "config.yaml").write_text(config.to_yaml())
    assert optimize_stage(run / "bundle", quiet_console())
    assert (run / "bundle" / "model.int8.onnx").is_file()
    return run / "bundle"


@pytest.fixture
def digits_run(exported_digits: Path, tmp_path: Path) -> Path:
    """A private copy of the exported run, free to tamper with."""
    copy = tmp_path / "run"
    shutil.copytree(exported_digits, copy)
    return copy


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli() -> CliRunner:
    """Run the real `torchport` CLI in a subprocess, as a user would."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "torchport.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)

    return run


@pytest.fixture(scope="session", autouse=True)
def runner_build_dir() -> Iterator[Path]:
    """Point the compiled runners and clients at a build folder that outlives the session: each compiles once."""
    previous = os.environ.get("TORCHPORT_BUILD_DIR")
    os.environ["TORCHPORT_BUILD_DIR"] = str(BUILD_DIR)
    yield BUILD_DIR
    if previous is None:
        os.environ.pop("TORCHPORT_BUILD_DIR", None)
    else:
        os.environ["TORCHPORT_BUILD_DIR"] = previous
