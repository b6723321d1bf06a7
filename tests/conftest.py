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


@pytest.fixture(scope="session")
def exported_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits run trained for a few epochs and exported to ONNX (no .pt2, to keep the session fast)."""
    from torchport.pipeline import export_stage
    from torchport.train.loop import train

    run_dir = tmp_path_factory.mktemp("digits") / "run"
    config = load_config(EXAMPLES / "digits.yaml", ["train.epochs=3", "export.aoti=false"])
    train(config, run_dir, console=quiet_console())
    export_stage(run_dir, quiet_console())
    return run_dir


@pytest.fixture(scope="session")
def exported_houses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/tabular_csv.yaml (a CSV with a categorical column) trained for 3 epochs and exported to ONNX."""
    from torchport.pipeline import export_stage
    from torchport.train.loop import train

    run_dir = tmp_path_factory.mktemp("houses") / "run"
    config = load_config(EXAMPLES / "tabular_csv.yaml", ["train.epochs=3", "export.aoti=false"])
    train(config, run_dir, console=quiet_console())
    export_stage(run_dir, quiet_console())
    return run_dir


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
