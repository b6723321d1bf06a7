"""Cluster manifests, not a cluster: a SLURM batch script and a Kubeflow PyTorchJob that run torchrun with
`torchport train` on many machines. torchrun does the rendezvous and elastic restarts inside either."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from torchport.errors import UsageError
from torchport.train.launch import DEFAULT_PORT, WORKER_MODULE

DEFAULT_IMAGE = "torchport:latest"
CONFIG_MOUNT = "/etc/torchport"  # where a PyTorchJob's pods find the config (a ConfigMap)


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
                            "containers": [_container(job)],
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


def _container(job: ClusterJob) -> dict[str, Any]:
    """The worker pod's container: the image, the torchrun command, the config and runs volumes."""
    resources = {"limits": {"nvidia.com/gpu": job.gpus_per_node}} if job.gpus_per_node else {}
    return {
        "name": "pytorch",  # the training operator looks for the container of this name
        "image": job.image,
        "imagePullPolicy": "IfNotPresent",
        "command": _pod_command(job),
        "env": [
            {"name": "OMP_NUM_THREADS", "value": "1"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT},
            {"name": "runs", "mountPath": "/workspace/runs"},
        ],
        **({"resources": resources} if resources else {}),
    }


def _pod_command(job: ClusterJob) -> list[str]:
    return [
        "python",
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={job.procs_per_node}",
        f"--max-restarts={job.max_restarts}",
        # The pod's own address (Kubernetes expands $(POD_IP) from the container's env): the rendezvous and gloo
        # use it rather than whatever the pod's hostname resolves to.
        "--local-addr=$(POD_IP)",
        "-m",
        WORKER_MODULE,
        "train",
        f"{CONFIG_MOUNT}/config.yaml",
        "--run-dir",
        job.run_dir,
        *job.overrides,
    ]


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
