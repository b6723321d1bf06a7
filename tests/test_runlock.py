"""One writer per run directory (issue 14, finding 1): a second writer is refused naming the holder, a lock left
by a SIGKILLed process is taken over, and `train` never silently replaces an earlier run's checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from torchport.runlock import run_dir_lock

pytestmark = pytest.mark.slow  # real processes

TORCHPORT = [sys.executable, "-m", "torchport.cli"]


def _only_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr
    return lines[0]


def test_second_writer_is_refused_and_a_killed_writers_lock_is_taken_over(tmp_path: Path) -> None:
    long = {  # far longer than the test (it is killed), with a checkpoint early on
        "name": "locked",
        "data": {"source": "digits", "batch_size": 8},
        "model": {"layers": ["flatten", {"linear": {"out_features": "classes"}}]},
        "train": {"epochs": 500, "checkpoint_every_steps": 5, "threads": 1},
    }
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(long))
    run_dir = tmp_path / "run"
    args = [str(config), "--run-dir", str(run_dir), "train.epochs=1"]
    first = subprocess.Popen([*TORCHPORT, "train", str(config), "--run-dir", str(run_dir)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.pt").exists() and first.poll() is None:
            assert time.monotonic() < deadline, "the first run wrote no checkpoint"
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        second = subprocess.run([*TORCHPORT, "train", *args], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stdout + second.stderr
        line = _only_line(second)
        assert f"pid {first.pid}" in line and str(run_dir) in line, line
        assert first.poll() is None, "the refused writer must leave the running one alone"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # The kernel dropped the dead writer's lock; what it left is its pid, which the next writer reports and replaces.
    third = subprocess.run(
        [*TORCHPORT, "train", *args, "--overwrite"], capture_output=True, text=True, timeout=300, check=False
    )
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"pid {first.pid}" in third.stdout + third.stderr


def test_train_keeps_an_earlier_runs_checkpoints_unless_asked(digits_run: Path, cli) -> None:  # type: ignore[no-untyped-def]
    checkpoints = digits_run / "checkpoints"
    before = {path.name: path.read_bytes() for path in checkpoints.iterdir()}
    refused = cli("train", str(digits_run / "config.yaml"), "--run-dir", str(digits_run), "train.epochs=1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = _only_line(refused)
    assert "--resume" in line and "--overwrite" in line, line
    assert {path.name: path.read_bytes() for path in checkpoints.iterdir()} == before
    args = ["train", str(digits_run / "config.yaml"), "--run-dir", str(digits_run), "--overwrite", "train.epochs=1"]
    overwritten = cli(*args)
    assert overwritten.returncode == 0, overwritten.stdout + overwritten.stderr
    assert len([line for line in (digits_run / "metrics.jsonl").read_text().splitlines() if line]) == 1


def test_export_into_a_run_dir_held_by_another_process_is_refused(digits_run: Path, cli) -> None:  # type: ignore[no-untyped-def]
    with run_dir_lock(digits_run, "test"):
        done = cli("export", str(digits_run))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"pid {os.getpid()}" in _only_line(done)
    assert not (digits_run / ".lock").read_text().strip(), "a released lock names no holder"


HOLDER_THAT_FORKS = """
import os, sys, time
from pathlib import Path
from torchport.runlock import run_dir_lock

with run_dir_lock(Path(sys.argv[1]), "train"):
    child = os.fork()  # what a DataLoader worker is: a fork that shares the holder's open files
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
"""


def test_a_killed_holders_forked_workers_do_not_keep_the_run_dir(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_THAT_FORKS, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    worker = int(holder.stdout.readline())
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        os.kill(worker, 0)  # the orphaned worker still lives, its copy of the lock file still open
        with run_dir_lock(tmp_path, "resume") as previous:
            assert previous is not None and previous.startswith(f"pid {holder.pid} ")
    finally:
        os.kill(worker, signal.SIGKILL)
