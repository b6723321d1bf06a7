"""Exact resume with the training features on: accumulation (checkpoints on optimizer steps) and bf16 autocast."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .procs import dropout_cnn_config, sigkill_after_first_checkpoint
from .test_resume import _train, resume_and_compare


@pytest.mark.slow
def test_sigkill_mid_epoch_with_accumulation_and_bf16_then_resume_is_bitwise_exact(tmp_path: Path) -> None:
    raw = dropout_cnn_config("resume_features", batch_size=8)
    raw["train"].update({"accumulate_steps": 3, "checkpoint_every_steps": 4, "precision": "bf16"})
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(raw))

    reference = _train(config, tmp_path / "reference")
    victim = _train(config, tmp_path / "victim")
    position = sigkill_after_first_checkpoint(victim, tmp_path / "victim" / "checkpoints")
    assert position["step_in_epoch"] % 3 == 0, "a mid-epoch checkpoint falls on an optimizer step"

    resume_and_compare(config, tmp_path, reference)
