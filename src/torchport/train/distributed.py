"""What distribution adds around the one training loop: ranks, the process group, model wrapping, collectives.

Under ``torchrun`` every worker runs the same ``train()``; torchrun tells each one its place through the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT, TORCHELASTIC_RESTART_COUNT). This module reads
that, starts the process group (nccl on CUDA, gloo on CPU) and wraps the model in DDP; the loop only asks
"which rank am I", "gather this" and "am I the writer". Outside torchrun every helper is a no-op, so a single
process runs the loop exactly as it always did.

Rules the helpers keep so that no rank can hang: every collective is called by every rank at the same point
of the loop, and work done by rank 0 alone (reading a checkpoint) hands its result *or its error* to the
others through ``on_writer`` instead of leaving them waiting.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn

from torchport.config import TrainConfig
from torchport.errors import ConfigError, DistributedError, TorchportError, UsageError, first_line
from torchport.train.launch import gloo_interface, under_torchrun  # torch-free: the CLI asks before importing torch

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the job. ``strategy`` is what the loop does: ``single``, ``dp`` or ``ddp``."""

    strategy: str = "single"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    restart_count: int = 0

    @property
    def distributed(self) -> bool:
        return self.strategy == "ddp"

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes logs, metrics and checkpoints; the others hold the same state in memory."""
        return self.rank == 0


def choose_strategy(config: TrainConfig, env: Mapping[str, str] | None = None) -> str:
    """``train.strategy`` resolved against how the process was started; a contradiction is a usage error."""
    env = os.environ if env is None else env
    world_size = int(env["WORLD_SIZE"]) if under_torchrun(env) else 1
    wanted = config.strategy
    if under_torchrun(env):
        if wanted in ("auto", "ddp"):
            return "ddp"
        if world_size > 1:
            raise UsageError(
                f"train.strategy: '{wanted}' is one process, but torchrun started {world_size};"
                " use ddp (or auto) under torchrun"
            )
        return wanted
    if wanted == "ddp":
        raise UsageError(
            "train.strategy: ddp runs under torchrun; add --nproc-per-node N to `torchport train`"
            " (or start it with your own torchrun)"
        )
    return "dp" if wanted == "dp" else "single"


def choose_backend(config: TrainConfig, device: torch.device) -> str:
    if config.backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if config.backend == "nccl" and device.type != "cuda":
        raise ConfigError("train.backend: nccl needs CUDA GPUs and train.device cuda; use gloo (or auto) on CPU")
    return config.backend


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    """One GPU per process under DDP (its local rank); the CPU otherwise."""
    wants_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("train.device: cuda was asked for but no CUDA GPU is visible; use auto or cpu")
        if local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); start at most"
                " one process per GPU (--nproc-per-node), or train on the CPU with train.device=cpu"
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(config: TrainConfig, say: Console | None = None) -> tuple[World, torch.device]:
    """Resolve the strategy and, under torchrun, join the process group; the caller must ``teardown``."""
    strategy = choose_strategy(config)
    env = os.environ
    if strategy != "ddp":
        return World(strategy=strategy), _device(config, 0)
    rank, local_rank, world_size = int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"])
    device = _device(config, local_rank)
    backend = choose_backend(config, device)
    restart_count = int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if not dist.is_initialized():
        timeout = timedelta(seconds=config.dist_timeout_s)
        where = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
        interface = gloo_interface() if backend == "gloo" else None
        if interface and interface.fallback and int(env.get("GROUP_WORLD_SIZE", "1")) > 1:
            print(f"warning: rank {rank}: {interface.describe()}", flush=True)
        try:
            store, generation = _attempt_store(rank, world_size, timeout, where)
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
            world = World("ddp", rank, local_rank, world_size, backend, restart_count)
            # torchrun counts restarts per node (a node that only saw another node's worker die says 0): the
            # group agrees on the largest, and a later generation on the same store is a restart too.
            restart_count = max([generation - 1, *all_gather_objects(restart_count, world)])
            described = all_gather_objects(interface.describe() if interface else backend, world)
            if interface and say is not None:
                say.print(f"gloo: {_interfaces_line(described)}")
        except (dist.DistError, RuntimeError) as exc:
            raise lost_group(exc, rank, config.dist_timeout_s, f"forming the process group at {where}") from exc
    return World("ddp", rank, local_rank, world_size, backend, restart_count), device


def _interfaces_line(described: list[str]) -> str:
    """``rank 0 v1 198.18.0.1, rank 1 v2 198.18.0.2``; ranks that share an interface are listed together."""
    ranks: dict[str, list[int]] = {}
    for rank, text in enumerate(described):
        ranks.setdefault(text, []).append(rank)
    parts = [f"rank{'s' if len(r) > 1 else ''} {','.join(map(str, r))} {text}" for text, r in ranks.items()]
    return "; ".join(parts)


def _attempt_store(rank: int, world_size: int, timeout: timedelta, where: str) -> tuple[dist.Store, int]:
    """torchrun's store (env://), with the keys of this attempt under a prefix every rank agrees on.

    After a restart the new workers may get the same store (torchrun shares its agent's store across rounds),
    still holding the dead group's addresses; gloo would connect to ports nobody listens on. So each attempt
    meets under a fresh *generation*, which rank 0 takes from a counter in the store and hands to every other
    rank in answer to a random ticket that rank posts: a stale ticket left by a dead worker gets an answer
    nobody reads, and no per-node counter (TORCHELASTIC_RESTART_COUNT differs between nodes) is involved.
    A rank that has not arrived within ``timeout`` ends the wait with one line naming it.
    """
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
    base = f"torchport/{os.environ.get('TORCHELASTIC_RUN_ID', 'job')}"
    deadline = time.monotonic() + timeout.total_seconds()
    if rank == 0:
        generation = int(store.add(f"{base}/generation", 1))
        answered: dict[int, bytes] = {}
        while True:
            arrived = [r for r in range(1, world_size) if store.check([f"{base}/{generation}/arrived/{r}"])]
            missing = sorted(set(range(1, world_size)) - set(arrived))
            if not missing:
                break
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"the process group did not form within {timeout.total_seconds():g} s: rank(s)"
                    f" {', '.join(map(str, missing))} of {world_size} did not arrive at {where}; check that every"
                    " node started and can reach that address (--local-addr on a multi-homed host), or raise"
                    " train.dist_timeout_s"
                )
            for r in missing:
                if store.check([f"{base}/ticket/{r}"]):
                    ticket = store.get(f"{base}/ticket/{r}")
                    if answered.get(r) != ticket:
                        store.set(f"{base}/answer/{ticket.decode()}", str(generation))
                        answered[r] = ticket
            time.sleep(0.05)
    else:
        ticket = uuid.uuid4().hex
        store.set(f"{base}/ticket/{rank}", ticket)
        while not store.check([f"{base}/answer/{ticket}"]):
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"the process group did not form within {timeout.total_seconds():g} s: rank 0 did not admit"
                    f" rank {rank} at {where}; check that the node of rank 0 runs and is reachable, or raise"
                    " train.dist_timeout_s"
                )
            time.sleep(0.05)
        generation = int(store.get(f"{base}/answer/{ticket}"))
        store.set(f"{base}/{generation}/arrived/{rank}", "1")
    return dist.PrefixStore(f"{base}/{generation}", store), generation


def is_group_failure(exc: BaseException) -> bool:
    """A collective or the store failed (gloo and c10d raise plain RuntimeErrors that name their source file)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(mark in text for mark in ("gloo", "c10d", "NCCL", "ProcessGroup"))


def lost_group(exc: BaseException, rank: int, timeout_s: float, doing: str) -> TorchportError:
    """A failed collective or store call as the one line a user sees (the library's message is pages long)."""
    if isinstance(exc, TorchportError):
        return exc
    detail = first_line(exc, type(exc).__name__)
    if len(detail) > 160:
        detail = detail[:157] + "..."
    # This node's agent restarts the group while it has restarts left (torchrun counts them per node).
    done, allowed = (
        int(os.environ.get(key, "0")) for key in ("TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS")
    )
    then = (
        f"torchrun restarts the group (restart {done + 1} of {allowed}), which resumes from the last checkpoint"
        if done < allowed
        else "Rerun with --resume to continue from the last checkpoint"
    )
    return DistributedError(
        f"rank {rank}: lost the process group while {doing} ({detail}); a peer died or the network between"
        f" nodes failed (collectives wait at most train.dist_timeout_s = {timeout_s:g} s). {then}"
    )


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def seed_rank_streams(seed: int, world: World) -> None:
    """Model init used the shared seed, so every rank starts from the same weights; from here on each rank
    draws its own dropout masks (rank 0 keeps the single-process stream, so one process is unchanged)."""
    if world.rank > 0:
        torch.manual_seed(seed + 1_000_003 * world.rank)


def wrap_model(model: nn.Module, world: World, device: torch.device, sync_batchnorm: bool, say: Console) -> nn.Module:
    """The module the loop calls forward on; the plain ``model`` stays what is saved and evaluated."""
    if world.strategy == "dp":
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        if gpus == 0:
            say.print("train.strategy dp: no CUDA GPUs here, so DataParallel is skipped and training runs on the CPU")
            return model
        return nn.DataParallel(model)
    if not world.distributed:
        return model
    if sync_batchnorm:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            say.print("train.sync_batchnorm: SyncBatchNorm needs CUDA; on CPU each rank keeps its own statistics")
    device_ids = [device.index] if device.type == "cuda" else None
    # A 1-channel conv's weight gradient comes back in an ambiguous layout; DDP copies it into its bucket
    # correctly but warns on every process at the first step. The warning says nothing a user can act on.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


# --- collectives (every rank calls them at the same point; no-ops in one process) ------------------------------


def all_gather_objects(value: T, world: World) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    gathered: list[Any] = [None] * world.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """Sums over ranks, added in rank order so that every rank gets bitwise the same numbers."""
    per_rank = all_gather_objects([float(v) for v in values], world)
    return [sum(rank_values[i] for rank_values in per_rank) for i in range(len(values))]


def broadcast_object(value: T, world: World) -> T:
    if not world.distributed:
        return value
    holder: list[Any] = [value if world.is_writer else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def on_writer(work: Callable[[], T], world: World) -> T:
    """Run ``work`` on rank 0 and hand its result to every rank. An error there is raised on every rank, so a
    bad checkpoint stops the whole job with one message instead of leaving the other ranks in a collective."""
    result: Any = None
    error: TorchportError | None = None
    if world.is_writer:
        try:
            result = work()
        except TorchportError as exc:
            error = exc
    result, error = broadcast_object((result, error), world)
    if error is not None:
        raise error
    return result


def shard(count: int, world: World) -> range:
    """The indices of ``count`` items this rank handles in evaluation: every world_size-th, from its rank."""
    return range(world.rank, count, world.world_size)
