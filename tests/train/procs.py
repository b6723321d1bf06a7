"""Real processes for the distributed tests: started in their own session, always killed as a group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from torchport.train.checkpoint import load_checkpoint

TORCHPORT = [sys.executable, "-m", "torchport.cli"]


def dropout_cnn_config(name: str, batch_size: int) -> dict[str, Any]:
    """A small digits CNN with dropout, checkpointing every 5 steps: the subject of the exact-resume tests.

    Dropout makes the weights depend on the RNG stream too; a small batch gives enough steps an epoch that a kill
    right after the first checkpoint lands well inside the first epoch.
    """
    return {
        "name": name,
        "seed": 3,
        "data": {"source": "digits", "batch_size": batch_size},
        "model": {
            "layers": [
                {"conv2d": {"out_channels": 8, "kernel_size": 3, "padding": 1}},
                "relu",
                "flatten",
                {"dropout": {"p": 0.2}},
                {"linear": {"out_features": 32}},
                "relu",
                {"linear": {"out_features": "classes"}},
            ]
        },
        "train": {
            "epochs": 2,
            "optimizer": {"name": "AdamW", "lr": 0.003},
            "scheduler": {"name": "CosineAnnealingLR", "interval": "step"},
            "checkpoint_every_steps": 5,
            "threads": 1,
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``torchport ARGS`` in a new session (its own process group), stdout and stderr into ``log``."""
    with open(log, "wb") as handle:
        return subprocess.Popen([*TORCHPORT, *args], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole group: the torchrun agent and every worker it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def cleanup(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            kill_group(proc)


def wait_ok(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """Wait for a clean exit; on failure or timeout, the assertion carries the log's tail."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"timed out after {timeout} s:\n{log.read_text()[-3000:]}") from None
    text = log.read_text()
    assert code == 0, f"exit {code}:\n{text[-3000:]}"
    return text


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def worker_with_rank(agent: int, rank: int, timeout: float = 60) -> int:
    """The pid of the worker process with RANK=``rank`` that the torchrun agent ``agent`` started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children(agent):
            with contextlib.suppress(OSError):
                if f"RANK={rank}".encode() in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
                    return pid
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} under torchrun agent {agent}")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]  # type: ignore[no-any-return]


def sigkill_after_first_checkpoint(victim: subprocess.Popen[bytes], checkpoints: Path) -> dict[str, Any]:
    """SIGKILL a training process as soon as it writes ``last.pt``; the checkpoint's position, which must lie
    inside the first epoch (so that the resume has a partial epoch to finish)."""
    deadline = time.monotonic() + 120
    while not (checkpoints / "last.pt").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    position: dict[str, Any] = load_checkpoint(checkpoints / "last.pt")["position"]
    assert position["epoch"] == 0 and position["step_in_epoch"] > 0, "the kill must land mid-epoch"
    return position
