"""A digits bundle with its INT8 variant, shared by the hand-off tests (each writes its own output folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console

from torchport.config import load_config


@pytest.fixture(scope="session")
def digits_bundle(exported_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's digits run with the INT8 variant added (`torchport optimize`, no timing)."""
    from torchport.pipeline import optimize_stage

    run = tmp_path_factory.mktemp("package_digits") / "run"
    shutil.copytree(exported_digits, run)
    config = load_config(run / "config.yaml", ['export.variants=["int8"]', "export.latency_iterations=0"])
    (run / "config.yaml").write_text(config.to_yaml())
    assert optimize_stage(run / "bundle", Console(quiet=True))
    return run / "bundle"
