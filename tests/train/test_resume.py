"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bitwise equal to the same run left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from torchport.train.checkpoint import load_checkpoint

from .procs import dropout_cnn_config

# Batch 8: about 180 steps an epoch.
CONFIG = dropout_cnn_config("resume", batch_size=8)


def _train(config: Path, run_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "torchport.cli", "train", str(config), "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]  # type: ignore[no-any-return]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_exact(tmp_path: Path) -> None:
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))

    reference = _train(config, tmp_path / "reference")
    victim = _train(config, tmp_path / "victim")
    checkpoints = tmp_path / "victim" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints / "last.pt").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    position = load_checkpoint(checkpoints / "last.pt")["position"]
    assert position["epoch"] == 0 and position["step_in_epoch"] > 0, "the kill must land mid-epoch"

    resumed = _train(config, tmp_path / "victim", "--resume")
    _, resumed_err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, resumed_err.decode()
    _, reference_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_err.decode()

    expected, actual = _final_weights(tmp_path / "reference"), _final_weights(tmp_path / "victim")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"
    epochs = [line for line in (tmp_path / "victim" / "metrics.jsonl").read_text().splitlines() if line]
    assert len(epochs) == 2, "each epoch is recorded exactly once across the kill"


@pytest.mark.slow
def test_resume_refuses_a_corrupted_checkpoint_and_falls_back(tmp_path: Path) -> None:
    config = tmp_path / "resume.yaml"
    small = dropout_cnn_config("resume", batch_size=8)
    small["train"]["epochs"] = 1
    config.write_text(yaml.safe_dump(small))
    run_dir = tmp_path / "run"
    assert _train(config, run_dir).wait(timeout=300) == 0
    last = run_dir / "checkpoints" / "last.pt"
    newest = max((run_dir / "checkpoints").glob("ckpt-*.pt"))
    newest.write_bytes(newest.read_bytes()[:1000])  # last.pt is the same file: both are now truncated
    resumed = _train(config, run_dir, "--resume", "train.epochs=2")
    _, err = resumed.communicate(timeout=300)
    # A different config hash is refused; resume with the same config instead.
    assert resumed.returncode == 2 and b"different config" in err
    resumed = subprocess.run(
        [sys.executable, "-m", "torchport.cli", "train", str(config), "--run-dir", str(run_dir), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "corrupted or truncated" in resumed.stdout + resumed.stderr
    assert load_checkpoint(last)["position"]["epoch"] == 1
