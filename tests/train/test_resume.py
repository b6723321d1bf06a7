"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bitwise equal to the same run left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from torchport.train.checkpoint import load_checkpoint

from .procs import dropout_cnn_config, sigkill_after_first_checkpoint

# Batch 8: about 180 steps an epoch.
CONFIG = dropout_cnn_config("resume", batch_size=8)


def _train(config: Path, run_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "torchport.cli", "train", str(config), "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]  # type: ignore[no-any-return]


def resume_and_compare(config: Path, tmp_path: Path, reference: subprocess.Popen[bytes]) -> None:
    """Resume the killed run in ``tmp_path/victim``; its final weights must equal the undisturbed reference's."""
    resumed = _train(config, tmp_path / "victim", "--resume")
    _, resumed_err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, resumed_err.decode()
    _, reference_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_err.decode()
    expected, actual = _final_weights(tmp_path / "reference"), _final_weights(tmp_path / "victim")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_exact(tmp_path: Path) -> None:
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))

    reference = _train(config, tmp_path / "reference")
    victim = _train(config, tmp_path / "victim")
    sigkill_after_first_checkpoint(victim, tmp_path / "victim" / "checkpoints")

    resume_and_compare(config, tmp_path, reference)
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


# --- resume with the run's own config, and fallbacks (issue 14, findings 6 and 8) -----------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torchport.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


DIGITS_AS_TRAINED = [str(Path(__file__).resolve().parents[2] / "examples" / "digits.yaml")]
DIGITS_AS_TRAINED += ["train.epochs=3", "export.aoti=false"]  # as tests/conftest.py trains it


@pytest.mark.slow
def test_resume_with_the_runs_own_config_and_one_hash_everywhere(digits_run: Path) -> None:
    import json

    done = _cli("train", str(digits_run / "config.yaml"), "--run-dir", str(digits_run), "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    checkpoint = load_checkpoint(digits_run / "checkpoints" / "last.pt")["config_hash"]
    summary = json.loads((digits_run / "summary.json").read_text())["config_hash"]
    manifest = json.loads((digits_run / "bundle" / "manifest.json").read_text())["provenance"]["config_hash"]
    assert checkpoint == summary == manifest


@pytest.mark.slow
def test_resume_falls_back_past_a_checksum_file_with_bad_bytes(digits_run: Path) -> None:
    (digits_run / "checkpoints" / "last.pt.sha256").unlink()  # a hard link: damage last.pt's alone
    (digits_run / "checkpoints" / "last.pt.sha256").write_bytes(b"\xff\xfe\x00")
    done = _cli("train", *DIGITS_AS_TRAINED, "--run-dir", str(digits_run), "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "last.pt.sha256" in done.stdout and "resumed from" in done.stdout


@pytest.mark.slow
def test_resume_falls_back_past_a_checkpoint_that_does_not_fit_the_model(digits_run: Path) -> None:
    from torchport.train.checkpoint import save_checkpoint

    checkpoints = digits_run / "checkpoints"
    newest = max(checkpoints.glob("ckpt-*.pt"))
    state = load_checkpoint(newest)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3, 3)  # a well-formed checkpoint of some other model
    for path in (newest, checkpoints / "last.pt"):
        path.unlink()  # last.pt is a hard link to the newest step file
        save_checkpoint(state, path)
    done = _cli("train", *DIGITS_AS_TRAINED, "--run-dir", str(digits_run), "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stdout.split())  # the console wraps long lines
    assert "does not fit the model" in said and name in said
    assert load_checkpoint(checkpoints / "last.pt")["position"]["epoch"] == 3
