"""Accumulation and loggers under DDP (torchrun, 2 processes on this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .procs import cleanup, start, wait_ok, weights
from .test_distributed import MLP, _summary, _write


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_two_processes_accumulating_two_batches_match_one_process_with_batch_4b_and_only_rank0_logs(
    tmp_path: Path,
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    b = 16
    single = {**MLP, "name": "single"}
    accumulated = {
        **MLP,
        "name": "accumulated",
        "train": {**MLP["train"], "accumulate_steps": 2, "loggers": ["tensorboard"]},
    }
    accumulated["train"]["checkpoint_every_steps"] = 40
    one = start(
        ["train", str(_write(tmp_path, single, 4 * b)), "--run-dir", str(tmp_path / "one")], tmp_path / "one.log"
    )
    two = start(
        ["train", str(_write(tmp_path, accumulated, b)), "--run-dir", str(tmp_path / "two"), "--nproc-per-node", "2"],
        tmp_path / "two.log",
    )
    with cleanup(one, two):
        wait_ok(one, tmp_path / "one.log", 120)
        wait_ok(two, tmp_path / "two.log", 120)
    # Each optimizer step sees the same 64 samples: one batch of 64, or 2 ranks x 2 accumulated batches of 16.
    # After 20 optimizer steps: step 20 of the single run, batch-step 40 of the accumulating one.
    expected = weights(tmp_path / "one" / "checkpoints/ckpt-00000020.pt")
    actual = weights(tmp_path / "two" / "checkpoints/ckpt-00000040.pt")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5, msg=f"{name} differs")
    summary = _summary(tmp_path / "two")
    assert summary["world_size"] == 2 and summary["accumulate_steps"] == 2
    # Rank 0 alone writes TensorBoard events: one event file, each epoch once.
    assert len(list((tmp_path / "two" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(tmp_path / "two" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_accuracy")] == [0]
