"""The checkpoint format version is checked on load: a checkpoint of another format is refused with one line;
``--resume`` falls back past it to the previous good checkpoint, ``torchport export`` stops with exit 2."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

from torchport import cli
from torchport.config import Config, load_config
from torchport.errors import CheckpointError
from torchport.train.checkpoint import load_checkpoint, save_checkpoint
from torchport.train.loop import train
from torchport.train.resume import CHECKPOINT_FORMAT, check_format

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FUTURE_FORMAT = CHECKPOINT_FORMAT + 1


def _config() -> Config:
    # iris: 120 training samples in batches of 16, so 8 steps an epoch; a checkpoint every 3 steps and at each
    # epoch's end leaves ckpt-15 and ckpt-16 (= last.pt) after two epochs.
    return load_config(EXAMPLES / "iris_mlp.yaml", ["train.epochs=2", "train.checkpoint_every_steps=3"])


@pytest.fixture(scope="module")
def trained_iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("iris") / "run"
    train(_config(), run_dir, console=Console(quiet=True))
    return run_dir


@pytest.fixture
def iris_run(trained_iris: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run (hard links become copies), free to tamper with."""
    return Path(shutil.copytree(trained_iris, tmp_path / "run"))


def _rewrite_format(path: Path, version: int | None) -> None:
    state = load_checkpoint(path)
    if version is None:
        del state["format"]
    else:
        state["format"] = version
    save_checkpoint(state, path)  # a well-formed file with its own valid checksum


def test_another_format_or_none_is_refused_in_one_line_naming_file_and_both_versions() -> None:
    path = Path("runs/x/checkpoints/last.pt")
    check_format(path, {"format": CHECKPOINT_FORMAT, "model": {}})
    with pytest.raises(CheckpointError) as info:
        check_format(path, {"format": FUTURE_FORMAT, "model": {}})
    message = str(info.value)
    assert str(path) in message and f"format version {FUTURE_FORMAT}" in message
    assert f"reads format version {CHECKPOINT_FORMAT}" in message and "\n" not in message
    with pytest.raises(CheckpointError, match="has no format version"):
        check_format(path, {"model": {}})


def test_resume_falls_back_past_checkpoints_of_another_format(iris_run: Path) -> None:
    checkpoints = iris_run / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("ckpt-*.pt")) == ["ckpt-00000015.pt", "ckpt-00000016.pt"]
    uninterrupted = load_checkpoint(checkpoints / "last.pt")["model"]
    _rewrite_format(checkpoints / "last.pt", FUTURE_FORMAT)
    _rewrite_format(checkpoints / "ckpt-00000016.pt", None)

    said = io.StringIO()
    train(_config(), iris_run, resume=True, console=Console(file=said, width=1000))

    lines = said.getvalue().splitlines()
    skipped = [line for line in lines if line.startswith("skipped:")]
    assert len(skipped) == 2
    assert "last.pt has format version 2" in skipped[0] and "ckpt-00000016.pt has no format version" in skipped[1]
    assert any(line.startswith(f"resumed from {checkpoints / 'ckpt-00000015.pt'} at epoch 2, step 7") for line in lines)
    resumed = load_checkpoint(checkpoints / "last.pt")
    assert resumed["format"] == CHECKPOINT_FORMAT and resumed["position"]["global_step"] == 16
    for name, weights in uninterrupted.items():
        assert torch.equal(resumed["model"][name], weights), f"{name} differs after the fallback resume"


def test_export_of_a_checkpoint_of_another_format_exits_2_with_one_line(
    iris_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    best = iris_run / "checkpoints" / "best.pt"
    _rewrite_format(best, FUTURE_FORMAT)
    assert cli.main(["export", str(iris_run)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: checkpoint {best} has format version {FUTURE_FORMAT}, but this torchport reads format version"
        f" {CHECKPOINT_FORMAT} only\n"
    )
    assert not (iris_run / "bundle").exists()
