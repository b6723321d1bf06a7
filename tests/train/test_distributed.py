"""DDP through torchrun with real processes on 127.0.0.1: equivalence, multi-node rendezvous, elastic restart.

Every test starts its processes in their own session and kills the whole group in ``finally``, and has a hard
timeout, so a stuck collective fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from torchport.train.checkpoint import load_checkpoint

from .procs import cleanup, dropout_cnn_config, free_port, start, wait_ok, weights, worker_with_rank

ROOT = Path(__file__).resolve().parents[2]

# No batchnorm, no dropout: two processes with batch b and one with batch 2b see the same samples per step
# (rank r takes every 2nd index of the same permutation) and DDP averages the two gradients, so the only
# difference left is the order of float additions.
MLP = {
    "name": "equivalence",
    "seed": 5,
    "data": {"source": "digits"},
    "model": {"layers": ["flatten", {"linear": {"out_features": 64}}, "relu", {"linear": {"out_features": "classes"}}]},
    "train": {
        "epochs": 1,
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        "checkpoint_every_steps": 20,
        "threads": 1,
    },
}

# Batch 4 per rank: 180 steps per rank and epoch.
ELASTIC = dropout_cnn_config("elastic", batch_size=4)


def _write(tmp_path: Path, config: dict[str, Any], batch_size: int | None = None) -> Path:
    if batch_size is not None:
        config = {**config, "data": {**config["data"], "batch_size": batch_size}}
    path = tmp_path / f"{config['name']}-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_two_processes_with_batch_b_match_one_process_with_batch_2b(tmp_path: Path) -> None:
    b = 16
    one = start(["train", str(_write(tmp_path, MLP, 2 * b)), "--run-dir", str(tmp_path / "one")], tmp_path / "one.log")
    two = start(
        ["train", str(_write(tmp_path, MLP, b)), "--run-dir", str(tmp_path / "two"), "--nproc-per-node", "2"],
        tmp_path / "two.log",
    )
    with cleanup(one, two):
        wait_ok(one, tmp_path / "one.log", 120)
        wait_ok(two, tmp_path / "two.log", 120)
    # 45 steps an epoch either way; step 40 is the last checkpoint before the final, uneven batch.
    step = "checkpoints/ckpt-00000040.pt"
    expected, actual = weights(tmp_path / "one" / step), weights(tmp_path / "two" / step)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5, msg=f"{name} differs")
    summary = _summary(tmp_path / "two")
    assert summary["world_size"] == 2 and summary["strategy"] == "ddp" and summary["backend"] == "gloo"
    assert summary["batch_size_per_process"] == b and summary["global_batch_size"] == 2 * b


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_two_node_rendezvous_trains_digits_to_95_percent(tmp_path: Path) -> None:
    """Two torchrun agents, one process each, meet at a c10d rendezvous on 127.0.0.1: one job of world size 2."""
    endpoint = f"127.0.0.1:{free_port()}"
    config = str(ROOT / "examples" / "digits.yaml")
    node = [
        "--nproc-per-node",
        "1",
        "--nnodes",
        "2",
        "--rdzv-endpoint",
        endpoint,
        "data.batch_size=32",
        "train.threads=1",
    ]
    agents = [
        start(["train", config, "--run-dir", str(tmp_path / "run"), *node], tmp_path / f"node{i}.log") for i in (0, 1)
    ]
    with cleanup(*agents):
        logs = [wait_ok(agent, tmp_path / f"node{i}.log", 140) for i, agent in enumerate(agents)]
    summary = _summary(tmp_path / "run")
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 64
    assert summary["best"]["val_accuracy"] >= 0.95, summary["best"]
    assert sum("trained digits" in log for log in logs) == 1, "rank 0 alone reports"
    epochs = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == 12, "rank 0 alone writes metrics"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_of_a_worker_restarts_the_group_and_ends_bitwise_equal(tmp_path: Path) -> None:
    config = str(_write(tmp_path, ELASTIC))
    ddp = ["--nproc-per-node", "2", "--max-restarts", "2"]
    reference = start(["train", config, "--run-dir", str(tmp_path / "reference"), *ddp], tmp_path / "reference.log")
    victim = start(["train", config, "--run-dir", str(tmp_path / "victim"), *ddp], tmp_path / "victim.log")
    with cleanup(reference, victim):
        writer = worker_with_rank(victim.pid, rank=0)  # the launcher exec()s torchrun: its pid is the agent's
        last = tmp_path / "victim" / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 120
        while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(writer, signal.SIGKILL)  # rank 0, the one that writes checkpoints
        victim_log = wait_ok(victim, tmp_path / "victim.log", 200)
        wait_ok(reference, tmp_path / "reference.log", 200)

    resumed = re.search(r"resumed from \S+ at epoch (\d+), step (\d+)", victim_log)
    assert resumed, f"the restarted group did not resume:\n{victim_log[-3000:]}"
    assert int(resumed.group(2)) > 0, "the kill must land mid-epoch"
    final = "checkpoints/last.pt"
    expected, actual = weights(tmp_path / "reference" / final), weights(tmp_path / "victim" / final)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after the elastic restart"
    state = load_checkpoint(tmp_path / "victim" / final)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert len((tmp_path / "victim" / "metrics.jsonl").read_text().splitlines()) == 2, "each epoch recorded once"
