"""Launch lines and cluster manifests, strategy choice, and the DDP/DP code paths in one process (fast)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from torchport import cli
from torchport.config import TrainConfig, load_config
from torchport.errors import UsageError
from torchport.train.distributed import choose_strategy
from torchport.train.launch import TorchrunOptions, torchrun_command

from .procs import free_port

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "examples" / "digits.yaml")
TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}


@pytest.fixture
def no_exec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A test that reaches exec() would replace pytest itself; fail it instead. Run from tmp_path: the checkout's
    runs/digits, which `make demo` leaves, would refuse the launch before the option under test is checked."""
    monkeypatch.chdir(tmp_path)

    def refuse(*args: Any) -> None:
        raise AssertionError(f"exec reached: {args}")

    monkeypatch.setattr("os.execv", refuse)


def test_single_node_command_is_standalone_torchrun_running_the_cli() -> None:
    command = torchrun_command(TorchrunOptions(nproc_per_node=2, max_restarts=1), ["train", "cfg.yaml"])
    assert command[1:3] == ["-m", "torchport.train.agent"]  # torchrun in-process, its failures as one line
    assert "--standalone" in command and "--nproc-per-node=2" in command and "--max-restarts=1" in command
    assert command[-4:] == ["-m", "torchport.cli", "train", "cfg.yaml"]


def test_multi_node_command_uses_a_c10d_rendezvous() -> None:
    options = TorchrunOptions(nproc_per_node=4, nnodes="1:2", rdzv_endpoint="head:29400", rdzv_id="job")
    command = torchrun_command(options, ["train", "cfg.yaml"])
    for part in ("--nnodes=1:2", "--rdzv-backend=c10d", "--rdzv-endpoint=head:29400", "--rdzv-id=job"):
        assert part in command
    assert "--standalone" not in command


def test_local_addr_is_passed_and_makes_the_endpoint_node_host_the_store() -> None:
    host = TorchrunOptions(nproc_per_node=1, nnodes="2", rdzv_endpoint="10.0.0.1:29500", local_addr="10.0.0.1")
    other = TorchrunOptions(nproc_per_node=1, nnodes="2", rdzv_endpoint="10.0.0.1:29500", local_addr="10.0.0.2")
    assert "--local-addr=10.0.0.1" in torchrun_command(host, [])
    assert "--rdzv-conf=is_host=1" in torchrun_command(host, [])
    assert not any(part.startswith("--rdzv-conf") for part in torchrun_command(other, []))
    bounded = TorchrunOptions(nproc_per_node=1, nnodes="2", rdzv_endpoint="h:1", dist_timeout_s=300)
    assert "--rdzv-conf=read_timeout=60" in torchrun_command(bounded, [])


def test_local_addr_that_no_interface_has_is_one_line(no_exec: None, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--nproc-per-node", "1", "--nnodes", "2", "--rdzv-endpoint", "h:1", "--local-addr", "192.0.2.77"]
    assert cli.main(["train", DIGITS, *args]) == 2
    assert "no interface of this host has that address" in capsys.readouterr().err


def test_node_rank_selects_the_static_rendezvous() -> None:
    options = TorchrunOptions(nproc_per_node=1, nnodes="2", node_rank=1, rdzv_endpoint="10.0.0.1:29500")
    command = torchrun_command(options, [])
    assert {"--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29500"} <= set(command)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--nproc-per-node", "0"], "--nproc-per-node: expected at least 1"),
        (["--nproc-per-node", "2", "--nnodes", "2"], "add --rdzv-endpoint"),
        (["--nproc-per-node", "2", "--nnodes", "two"], "--nnodes: expected a number"),
        (["--nproc-per-node", "2", "--nnodes", "2", "--rdzv-endpoint", "h:99999"], "--rdzv-endpoint: expected"),
        (["--nproc-per-node", "2", "--nnodes", "2", "--rdzv-endpoint", "h:1", "--node-rank", "2"], "--node-rank"),
        (["--nproc-per-node", "2", "--max-restarts", "-1"], "--max-restarts: expected 0 or more"),
        (["--nnodes", "2"], "--nnodes is a torchrun option; it needs --nproc-per-node"),
        (["--nproc-per-node", "2", "train.strategy=dp"], "train.strategy: 'dp' is one process"),
    ],
)
def test_bad_launch_options_are_one_line_and_exit_2(
    options: list[str], message: str, no_exec: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["train", DIGITS, *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err


def test_nproc_per_node_inside_torchrun_is_refused(
    no_exec: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["train", DIGITS, "--nproc-per-node", "2"]) == 2
    assert "already runs under torchrun" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("strategy", "env", "expected"),
    [
        ("auto", {}, "single"),
        ("auto", TORCHRUN_ENV, "ddp"),
        ("ddp", TORCHRUN_ENV, "ddp"),
        ("dp", {}, "dp"),
        ("single", {}, "single"),
        ("single", {**TORCHRUN_ENV, "WORLD_SIZE": "1"}, "single"),
    ],
)
def test_strategy_follows_how_the_process_was_started(strategy: str, env: dict[str, str], expected: str) -> None:
    assert choose_strategy(TrainConfig(strategy=strategy), env) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("strategy", "env"), [("ddp", {}), ("dp", TORCHRUN_ENV), ("single", TORCHRUN_ENV)])
def test_contradicting_strategies_are_usage_errors(strategy: str, env: dict[str, str]) -> None:
    with pytest.raises(UsageError, match=r"train\.strategy"):
        choose_strategy(TrainConfig(strategy=strategy), env)  # type: ignore[arg-type]


# --- manifests ---------------------------------------------------------------------------------------------------


def _emit(tmp_path: Path, kind: str, *extra: str) -> str:
    out = tmp_path / f"job.{kind}"
    assert (
        cli.main(["launch", DIGITS, "--emit", kind, "--nodes", "2", "--gpus-per-node", "4", "-o", str(out), *extra])
        == 0
    )
    return out.read_text()


def test_kubernetes_manifest_is_an_elastic_pytorchjob(tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all(_emit(tmp_path, "kubernetes", "--min-nodes", "1", "train.epochs=3")))
    config_map, job = documents
    assert config_map["kind"] == "ConfigMap" and "config.yaml" in config_map["data"]
    assert yaml.safe_load(config_map["data"]["config.yaml"])["name"] == "digits"
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["metadata"]["name"] == "digits"
    policy = job["spec"]["elasticPolicy"]
    assert policy["rdzvBackend"] == "c10d" and policy["minReplicas"] == 1 and policy["maxReplicas"] == 2
    assert policy["nProcPerNode"] == 4 and policy["maxRestarts"] == 3
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2 and worker["restartPolicy"] == "OnFailure"
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "pytorch" and container["image"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    command = container["command"]
    assert command[:3] == ["python", "-m", "torch.distributed.run"]
    assert command[command.index("torchport.cli") + 1 :][:2] == ["train", "/etc/torchport/config.yaml"]
    assert "train.epochs=3" in command
    assert "--local-addr=$(POD_IP)" in command, "each pod advertises its own address"
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in worker["template"]["spec"]["volumes"]}
    assert mounts["config"] == "/etc/torchport" and set(mounts) <= volumes


def test_slurm_script_runs_torchrun_per_node_with_c10d_on_the_head_node(tmp_path: Path) -> None:
    script = _emit(tmp_path, "slurm")
    assert script.startswith("#!/bin/bash\n")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4"):
        assert line in script.splitlines()
    assert "srun python -m torch.distributed.run" in script
    for part in ("--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d", '--rdzv-endpoint="$head_node_ip:29500"'):
        assert part in script
    assert "scontrol show hostnames" in script and f"-m torchport.cli train {DIGITS}" in script
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(tmp_path / "job.slurm")], check=True)


def test_bad_manifest_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["launch", DIGITS, "--emit", "slurm", "--nodes", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --nodes")
    assert cli.main(["launch", DIGITS, "--emit", "kubernetes", "--nodes", "2", "--min-nodes", "3"]) == 2
    assert "--min-nodes" in capsys.readouterr().err


# --- the DDP and DP code paths, in this process --------------------------------------------------------------------


def _tiny(tmp_path: Path, *overrides: str) -> Any:
    config = {
        "name": "tiny",
        "data": {"source": "iris", "batch_size": 16},
        "model": {"layers": [{"linear": {"out_features": 8}}, "relu", {"linear": {"out_features": "classes"}}]},
        "train": {"epochs": 2, "threads": 1, "checkpoint_every_steps": 3},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path, list(overrides))


def test_dp_without_gpus_says_so_in_one_line_and_trains_on_cpu(tmp_path: Path) -> None:
    from torchport.train.loop import train

    console = Console(record=True, width=200)
    summary = train(_tiny(tmp_path, "train.strategy=dp", "train.device=cpu"), tmp_path / "run", console=console)
    lines = [line for line in console.export_text().splitlines() if "DataParallel" in line]
    assert len(lines) == 1 and "no CUDA GPUs" in lines[0]
    assert summary["strategy"] == "dp" and summary["world_size"] == 1


def test_ddp_path_with_a_world_of_one_matches_a_plain_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole DDP path (process group, wrapper, gathers, rank-0 writes) in-process, with world size 1."""
    from torchport.train.checkpoint import load_checkpoint
    from torchport.train.loop import train

    plain = train(_tiny(tmp_path), tmp_path / "plain", console=Console(quiet=True))
    env = {**TORCHRUN_ENV, "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ddp = train(_tiny(tmp_path), tmp_path / "ddp", console=Console(quiet=True))
    assert ddp["strategy"] == "ddp" and ddp["backend"] == "gloo" and plain["strategy"] == "single"
    assert ddp["final"]["val_accuracy"] == plain["final"]["val_accuracy"]
    expected = load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["model"]
    actual = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["model"]
    assert expected.keys() == actual.keys(), "DDP checkpoints hold the plain module's keys"
    assert all(bool((expected[k] == actual[k]).all()) for k in expected)
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["world_size"] == 1


def test_torchruns_own_rendezvous_settings_are_kept_and_win() -> None:
    options = TorchrunOptions(nproc_per_node=1, nnodes="1:2", rdzv_endpoint="h:1", dist_timeout_s=300)
    env = {"PET_RDZV_CONF": "last_call_timeout=8,keep_alive_interval=2"}
    assert "--rdzv-conf=last_call_timeout=8,keep_alive_interval=2,read_timeout=60" in torchrun_command(options, [], env)
    mine = torchrun_command(options, [], {"PET_RDZV_CONF": "read_timeout=7"})
    assert "--rdzv-conf=read_timeout=7" in mine
