"""Launch lines, not a launcher: the torchrun command for `torchport train --nproc-per-node`, and cluster
manifests (a SLURM batch script, a Kubeflow PyTorchJob) that run that same command on many machines.

torchrun does the process management, rendezvous and elastic restarts; every worker it starts runs
``python -m torchport.cli train CONFIG ...``, which finds its rank in the environment (see distributed.py).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from torchport.errors import UsageError

DEFAULT_PORT = 29500
DEFAULT_IMAGE = "torchport:latest"
WORKER_MODULE = "torchport.cli"
ENDPOINT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class TorchrunOptions:
    """What `torchport train` passes through to torchrun; checked here so a mistake is one line, exit 2."""

    nproc_per_node: int
    nnodes: str = "1"
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str = "torchport"
    max_restarts: int = 0

    def check(self) -> None:
        if self.nproc_per_node < 1:
            raise UsageError(f"--nproc-per-node: expected at least 1 process per node (got {self.nproc_per_node})")
        _, high = parse_nnodes(self.nnodes)
        if high > 1 and not self.rdzv_endpoint:
            raise UsageError(
                f"--nnodes {self.nnodes}: several nodes meet at a rendezvous; add --rdzv-endpoint HOST:PORT"
                " (the same on every node)"
            )
        if self.rdzv_endpoint:
            parse_endpoint(self.rdzv_endpoint)
        if self.node_rank is not None and ":" in str(self.nnodes):
            raise UsageError("--node-rank: fixed node ranks and an elastic MIN:MAX --nnodes do not mix; drop one")
        if self.node_rank is not None and not 0 <= self.node_rank < high:
            raise UsageError(f"--node-rank: expected 0 to {high - 1} for --nnodes {self.nnodes} (got {self.node_rank})")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts: expected 0 or more (got {self.max_restarts})")


def parse_nnodes(text: str) -> tuple[int, int]:
    """``N`` or ``MIN:MAX`` (an elastic job that runs with anywhere from MIN to MAX nodes)."""
    parts = str(text).split(":")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        low = high = 0
    if low < 1 or high < low:
        raise UsageError(f"--nnodes: expected a number of nodes N or a range MIN:MAX, at least 1 (got '{text}')")
    return low, high


def parse_endpoint(text: str) -> tuple[str, int]:
    match = ENDPOINT.match(text)
    port = int(match.group("port") or DEFAULT_PORT) if match else 0
    if not match or not 0 < port < 65536:
        raise UsageError(f"--rdzv-endpoint: expected HOST:PORT, e.g. node0.example.com:29500 (got '{text}')")
    return match.group("host"), port


def torchrun_command(options: TorchrunOptions, worker_args: list[str]) -> list[str]:
    """``python -m torch.distributed.run ... -m torchport.cli WORKER_ARGS``: one node's agent.

    Without an endpoint it is a single-node ``--standalone`` job (torchrun picks a free port). With one, every
    node's agent meets at a c10d rendezvous, which numbers the nodes itself and lets a restarted or replaced
    node rejoin; giving ``--node-rank`` asks for torchrun's static rendezvous instead (fixed ranks, the
    endpoint is the rank-0 node's master address).
    """
    options.check()
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={options.nproc_per_node}"]
    if options.rdzv_endpoint and options.node_rank is not None:
        host, port = parse_endpoint(options.rdzv_endpoint)
        command += [f"--nnodes={options.nnodes}", f"--node-rank={options.node_rank}"]
        command += [f"--master-addr={host}", f"--master-port={port}"]
    elif options.rdzv_endpoint:
        command += [f"--nnodes={options.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={options.rdzv_endpoint}"]
        command.append(f"--rdzv-id={options.rdzv_id}")
    else:
        command.append("--standalone")
    command.append(f"--max-restarts={options.max_restarts}")
    return [*command, "-m", WORKER_MODULE, *worker_args]


def worker_args(config: Path, run_dir: Path, overrides: list[str], resume: bool, debug: bool) -> list[str]:
    """The `torchport train` arguments each worker gets; absolute paths, so the workers' cwd cannot matter."""
    args = ["--debug"] if debug else []
    args += ["train", str(config.resolve()), "--run-dir", str(run_dir.resolve())]
    return [*args, *(["--resume"] if resume else []), *overrides]


# --- cluster manifests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterJob:
    """One training job for a cluster: ``nodes`` machines with ``gpus_per_node`` GPUs (0: CPU processes)."""

    name: str
    config: Path
    config_text: str
    nodes: int
    gpus_per_node: int
    run_dir: str
    overrides: tuple[str, ...] = ()
    max_restarts: int = 3
    min_nodes: int | None = None
    image: str = DEFAULT_IMAGE
    port: int = DEFAULT_PORT
    cpu_procs_per_node: int = 1

    def check(self) -> None:
        if self.nodes < 1:
            raise UsageError(f"--nodes: expected at least 1 (got {self.nodes})")
        if self.gpus_per_node < 0:
            raise UsageError(f"--gpus-per-node: expected 0 or more (got {self.gpus_per_node})")
        if self.min_nodes is not None and not 1 <= self.min_nodes <= self.nodes:
            raise UsageError(f"--min-nodes: expected 1 to --nodes {self.nodes} (got {self.min_nodes})")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts: expected 0 or more (got {self.max_restarts})")

    @property
    def procs_per_node(self) -> int:
        return self.gpus_per_node or self.cpu_procs_per_node

    @property
    def nnodes(self) -> str:
        return f"{self.min_nodes}:{self.nodes}" if self.min_nodes and self.min_nodes != self.nodes else str(self.nodes)

    @property
    def k8s_name(self) -> str:
        """Kubernetes names are lowercase DNS labels."""
        return re.sub(r"[^a-z0-9-]+", "-", self.name.lower()).strip("-")[:50] or "torchport"


def slurm_script(job: ClusterJob) -> str:
    """An sbatch script: one torchrun agent per node (``srun``), meeting at a c10d rendezvous on the head node."""
    job.check()
    train_args = shlex.join(["train", str(job.config), "--run-dir", job.run_dir, *job.overrides])
    gres = [f"#SBATCH --gpus-per-node={job.gpus_per_node}"] if job.gpus_per_node else []
    return "\n".join(
        [
            "#!/bin/bash",
            f"# torchport: {job.nodes} node(s) x {job.procs_per_node} process(es); written by `torchport launch`.",
            "# Submit with: sbatch THIS_FILE   (the config and run directory must be on a shared filesystem)",
            f"#SBATCH --job-name={job.name}",
            f"#SBATCH --nodes={job.nodes}",
            "#SBATCH --ntasks-per-node=1",
            *gres,
            f"#SBATCH --output={job.name}-%j.out",
            "",
            "set -euo pipefail",
            'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            'head_node_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | cut -d" " -f1)',
            "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
            "",
            "srun python -m torch.distributed.run \\",
            f"    --nnodes={job.nnodes} \\",
            f"    --nproc-per-node={job.procs_per_node} \\",
            f"    --max-restarts={job.max_restarts} \\",
            '    --rdzv-id="$SLURM_JOB_ID" \\',
            "    --rdzv-backend=c10d \\",
            f'    --rdzv-endpoint="$head_node_ip:{job.port}" \\',
            f"    -m {WORKER_MODULE} {train_args}",
            "",
        ]
    )


def pytorchjob_manifest(job: ClusterJob) -> list[dict[str, Any]]:
    """A ConfigMap holding the config and a Kubeflow PyTorchJob that mounts it.

    With ``elasticPolicy`` the training operator runs Worker replicas only and hands each pod's torchrun its
    rendezvous (PET_NNODES, PET_RDZV_ENDPOINT, ...) through the environment, so the command names none of it.
    """
    job.check()
    mount = "/etc/torchport"
    command = [
        "python",
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={job.procs_per_node}",
        f"--max-restarts={job.max_restarts}",
        "-m",
        WORKER_MODULE,
        "train",
        f"{mount}/config.yaml",
        "--run-dir",
        job.run_dir,
        *job.overrides,
    ]
    resources = {"limits": {"nvidia.com/gpu": job.gpus_per_node}} if job.gpus_per_node else {}
    container: dict[str, Any] = {
        "name": "pytorch",  # the training operator looks for the container of this name
        "image": job.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        "volumeMounts": [{"name": "config", "mountPath": mount}, {"name": "runs", "mountPath": "/workspace/runs"}],
        **({"resources": resources} if resources else {}),
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{job.k8s_name}-config"},
        "data": {"config.yaml": job.config_text},
    }
    pytorch_job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": job.k8s_name},
        "spec": {
            "elasticPolicy": {
                "rdzvBackend": "c10d",
                "minReplicas": job.min_nodes or job.nodes,
                "maxReplicas": job.nodes,
                "maxRestarts": job.max_restarts,
                "nProcPerNode": job.procs_per_node,
            },
            "pytorchReplicaSpecs": {
                "Worker": {
                    "replicas": job.nodes,
                    "restartPolicy": "OnFailure",
                    "template": {
                        "spec": {
                            "containers": [container],
                            "volumes": [
                                {"name": "config", "configMap": {"name": f"{job.k8s_name}-config"}},
                                # Replace with a PersistentVolumeClaim so checkpoints outlive the pods.
                                {"name": "runs", "emptyDir": {}},
                            ],
                        }
                    },
                }
            },
        },
    }
    return [config_map, pytorch_job]


def render(job: ClusterJob, kind: str) -> str:
    if kind == "slurm":
        return slurm_script(job)
    if kind == "kubernetes":
        header = (
            f"# torchport: Kubeflow PyTorchJob, {job.nnodes} node(s) x {job.procs_per_node} process(es).\n"
            "# Apply with: kubectl apply -f THIS_FILE   (needs the Kubeflow training operator; the image must\n"
            "# have torchport installed; the runs volume should be a PersistentVolumeClaim for real jobs)\n"
        )
        return header + yaml.safe_dump_all(pytorchjob_manifest(job), sort_keys=False)
    raise UsageError(f"--emit: expected slurm or kubernetes (got '{kind}')")


# --- the torchrun contract, as a worker sees it ---------------------------------------------------------------


def under_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """torchrun (and any launcher following its contract) sets these for every worker."""
    env = os.environ if env is None else env
    return all(key in env for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def env_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank before any process group exists (0 outside torchrun): who may print."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0")) if under_torchrun(env) else 0
