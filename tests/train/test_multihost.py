"""Multi-node training across two real (network-namespaced) hosts: see hosts.py for how they are built.

Each host runs one torchrun agent with one worker; the run directory is shared as on a cluster. Every test
has a hard timeout and every process is killed, and the namespaces deleted, when the session's hosts go.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from .hosts import Hosts, two_hosts
from .procs import dropout_cnn_config, start, wait_ok, weights, worker_with_rank

pytestmark = pytest.mark.slow

TIMEOUT_S = 20  # train.dist_timeout_s in these tests: short, so that a failure ends quickly

# No dropout: two hosts with batch b and one process with batch 2b see the same samples per step (as in
# test_distributed), so they reach the same weights up to float rounding and the same accuracy.
MLP = {
    "name": "multihost",
    "seed": 5,
    "data": {"source": "digits"},
    "model": {"layers": ["flatten", {"linear": {"out_features": 64}}, "relu", {"linear": {"out_features": "classes"}}]},
    "train": {
        "epochs": 1,  # older step checkpoints are pruned: step 40 must still be there at the end
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        "checkpoint_every_steps": 20,
        "threads": 1,
    },
}

# Dropout and a per-step scheduler: the subject of the bitwise tests. Batch 8 per rank: 90 steps an epoch.
ELASTIC = dropout_cnn_config("elastic-hosts", batch_size=8)
ELASTIC["train"]["dist_timeout_s"] = TIMEOUT_S


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    with two_hosts(tmp_path_factory.mktemp("hosts")) as built:
        yield built


def _write(folder: Path, config: dict[str, Any], batch_size: int | None = None) -> Path:
    if batch_size is not None:
        config = {**config, "data": {**config["data"], "batch_size": batch_size}}
    path = folder / f"{config['name']}-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _node(endpoint: str, *extra: str) -> list[str]:
    return ["--nproc-per-node", "1", "--nnodes", "2", "--rdzv-endpoint", endpoint, *extra]


def _both(
    hosts: Hosts, config: Path, run_dir: Path, logs: Path, *extra: str, port: int = 29500, **kw: Any
) -> list[Any]:
    """The same `torchport train` on both hosts, meeting at h1."""
    args = ["train", str(config), "--run-dir", str(run_dir), *_node(f"h1:{port}", *extra)]
    return [hosts.start(i, args, logs / f"{run_dir.name}-h{i + 1}.log", **kw) for i in (0, 1)]


def _wait_all(procs: list[Any], logs: list[Path], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    return [wait_ok(p, log, max(1.0, deadline - time.monotonic())) for p, log in zip(procs, logs, strict=True)]


def _logs(logs: Path, run_dir: Path) -> list[Path]:
    return [logs / f"{run_dir.name}-h{i}.log" for i in (1, 2)]


def _wait_for(path: Path, procs: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert path.exists(), f"{path} never appeared"


def _assert_bitwise(expected_run: Path, actual_run: Path) -> None:
    expected = weights(expected_run / "checkpoints" / "last.pt")
    actual = weights(actual_run / "checkpoints" / "last.pt")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs from the uninterrupted 2-host run"


@pytest.fixture(scope="module")
def reference(hosts: Hosts, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted 2-host run of ELASTIC: (its config, its run dir)."""
    folder = tmp_path_factory.mktemp("reference")
    config, run_dir = _write(folder, ELASTIC), folder / "reference"
    procs = _both(hosts, config, run_dir, folder, port=29510)
    _wait_all(procs, _logs(folder, run_dir), 240)
    return config, run_dir


@pytest.mark.timeout(240)
def test_two_hosts_reach_the_accuracy_of_one_host_with_the_same_global_batch(hosts: Hosts, tmp_path: Path) -> None:
    b = 16
    one = start(["train", str(_write(tmp_path, MLP, 2 * b)), "--run-dir", str(tmp_path / "one")], tmp_path / "one.log")
    two = _both(hosts, _write(tmp_path, MLP, b), tmp_path / "two", tmp_path, port=29501)
    wait_ok(one, tmp_path / "one.log", 200)
    logs = _wait_all(two, _logs(tmp_path, tmp_path / "two"), 200)

    single = json.loads((tmp_path / "one" / "summary.json").read_text())
    multi = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert multi["world_size"] == 2 and multi["global_batch_size"] == single["batch_size_per_process"] == 2 * b
    assert abs(multi["final"]["val_accuracy"] - single["final"]["val_accuracy"]) <= 0.01, (multi, single)
    # 45 steps an epoch either way; step 40 is the last checkpoint before the first epoch's final, uneven batch.
    step = "checkpoints/ckpt-00000040.pt"
    expected, actual = weights(tmp_path / "one" / step), weights(tmp_path / "two" / step)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5, msg=f"{name} differs")
    # rank 0 (on h1) names the interface each rank's gloo uses: the two ends of the veth pair.
    gloo = [line for line in logs[0].splitlines() if line.startswith("gloo:")]
    assert len(gloo) == 1 and hosts.links[0] in gloo[0] and hosts.links[1] in gloo[0], logs[0][-2000:]
    assert "198.18.0.1" in gloo[0] and "198.18.0.2" in gloo[0]


@pytest.mark.timeout(300)
def test_sigkill_of_a_worker_on_one_host_restarts_both_and_ends_bitwise_equal(
    hosts: Hosts, reference: tuple[Path, Path], tmp_path: Path
) -> None:
    config, expected = reference
    run_dir = tmp_path / "victim"
    procs = _both(hosts, config, run_dir, tmp_path, "--max-restarts", "2", port=29502)
    worker = worker_with_rank(procs[1].pid, rank=1)  # h2's agent is the pid we started (every step execs)
    _wait_for(run_dir / "checkpoints" / "last.pt", procs, 120)
    started = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    logs = _wait_all(procs, _logs(tmp_path, run_dir), 240)
    resumed = re.search(r"resumed from \S+ at epoch (\d+), step (\d+)", logs[0] + logs[1])
    assert resumed, f"the restarted group did not resume:\n{logs[0][-3000:]}"
    assert int(resumed.group(1)) == 1 and int(resumed.group(2)) > 0, "the kill must land mid-epoch"
    assert time.monotonic() - started < 200
    _assert_bitwise(expected, run_dir)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2, "each epoch recorded once"


@pytest.mark.timeout(300)
def test_a_cut_link_ends_both_hosts_in_one_line_and_resume_is_bitwise_equal(
    hosts: Hosts, reference: tuple[Path, Path], tmp_path: Path
) -> None:
    config, expected = reference
    run_dir = tmp_path / "cut"
    procs = _both(hosts, config, run_dir, tmp_path, port=29503)
    _wait_for(run_dir / "checkpoints" / "last.pt", procs, 120)
    hosts.link(1, up=False)
    try:
        cut_at = time.monotonic()
        codes = [p.wait(timeout=TIMEOUT_S + 60) for p in procs]
        took = time.monotonic() - cut_at
    finally:
        hosts.link(1, up=True)
    texts = [log.read_text() for log in _logs(tmp_path, run_dir)]
    assert all(code != 0 for code in codes), (codes, texts)
    assert took < TIMEOUT_S + 30, f"took {took:.0f} s to end after the link was cut"
    for text in texts:
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in text, text[-3000:]
        assert "--resume" in errors[0] or "rendezvous" in errors[0], errors

    procs = _both(hosts, config, run_dir, tmp_path, "--resume", port=29504)
    logs = _wait_all(procs, _logs(tmp_path, run_dir), 240)
    assert re.search(r"resumed from \S+ at epoch 1, step [1-9]", logs[0]), logs[0][-3000:]
    _assert_bitwise(expected, run_dir)


@pytest.mark.timeout(200)
def test_hosts_whose_names_resolve_elsewhere_train_with_local_addr(hosts: Hosts, tmp_path: Path) -> None:
    """Each host's own name points at an address nobody has (on-link, so no packet leaves the veth pair):
    torch cannot tell which node hosts the store, nor gloo which interface to use, without --local-addr."""
    wrong = hosts.hosts_file({"h1": "198.18.0.201", "h2": "198.18.0.202"}, name="hosts-elsewhere")
    config = _write(tmp_path, MLP, 32)
    run_dir = tmp_path / "elsewhere"
    procs = []
    for i, address in enumerate(hosts.addresses):
        args = ["train", str(config), "--run-dir", str(run_dir), *_node("198.18.0.1:29505", "--local-addr", address)]
        procs.append(hosts.start(i, args, tmp_path / f"elsewhere-h{i + 1}.log", hosts_file=wrong))
    logs = _wait_all(procs, _logs(tmp_path, run_dir), 150)
    assert json.loads((run_dir / "summary.json").read_text())["world_size"] == 2
    gloo = next(line for line in logs[0].splitlines() if line.startswith("gloo:"))
    assert "198.18.0.1" in gloo and "198.18.0.2" in gloo and "GLOO_SOCKET_IFNAME" in gloo, gloo


@pytest.mark.timeout(120)
def test_a_node_gone_from_an_elastic_job_ends_the_survivor_with_one_line(hosts: Hosts, tmp_path: Path) -> None:
    """`--nnodes 1:2`: h2 (agent and worker) is SIGKILLed mid-epoch. h1's worker sees the broken collective at
    once; its agent re-forms the group alone (world size 1) after the rendezvous' last call; the new worker
    refuses the checkpoint written by 2 processes (exit 2), and the agent ends there instead of spending its
    other restarts on the same refusal."""
    config, run_dir = _write(tmp_path, ELASTIC), tmp_path / "gone"
    # The rendezvous drops a node whose agent has missed keep_alive_max_attempt heartbeats, keep_alive_interval
    # apart (default 3 x 5 s), and waits last_call_timeout for more nodes once MIN are there (default 30 s).
    gone_s, last_call_s = 2 * 3, 8
    args = ["train", str(config), "--run-dir", str(run_dir), "--nproc-per-node", "1", "--nnodes", "1:2"]
    args += ["--rdzv-endpoint", "h1:29506", "--max-restarts", "2"]
    logs = _logs(tmp_path, run_dir)
    env = {"PET_RDZV_CONF": f"keep_alive_interval=2,keep_alive_max_attempt=3,last_call_timeout={last_call_s}"}
    procs = [hosts.start(i, args, logs[i], env=env) for i in (0, 1)]
    worker_with_rank(procs[1].pid, rank=1)  # both nodes are in the first round: world size 2
    _wait_for(run_dir / "checkpoints" / "last.pt", procs, 60)
    hosts.power_off(1)
    gone_at = time.monotonic()
    code = procs[0].wait(timeout=gone_s + last_call_s + 60)
    took = time.monotonic() - gone_at
    text = logs[0].read_text()
    assert code == 2, (code, text[-3000:])
    assert took < gone_s + last_call_s + 20, f"took {took:.0f} s to end after the node went away"
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    # The attempt that lost h2 says so; the re-formed group of one says why it cannot go on, once.
    assert len(errors) == 2, errors
    assert "rank 0: lost the process group" in errors[0] and "torchrun restarts the group (restart 1 of 2)" in errors[0]
    assert "re-formed with 1 process(es)" in errors[1] and "written by 2" in errors[1], errors
    assert "--resume" in errors[1], errors
    assert text.rstrip().splitlines()[-1] == errors[1], text[-2000:]
