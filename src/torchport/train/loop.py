"""The training loop: forward, loss, backward, step, metrics, checkpoint — readable top to bottom.

Everything that decides the final weights is a function of the config and the seed: model init, batch order
(per epoch, see sampling.py), dropout (the torch RNG state travels in the checkpoint, see resume.py). That is
what makes a run killed mid-epoch and resumed end with weights bitwise equal to a run left alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from torch import nn

from torchport.config import Config, default_run_dir
from torchport.data import DataSplits, Split, load_data
from torchport.data.loaders import Batch, batch_loader
from torchport.errors import UsageError
from torchport.models.compose import build_model
from torchport.models.spec import ModelMeta, model_meta, model_spec
from torchport.runlock import has_checkpoints, run_dir_lock
from torchport.train import distributed
from torchport.train.checkpoint import CheckpointWriter
from torchport.train.distributed import World
from torchport.train.launch import env_rank
from torchport.train.optim import build_optimizer, build_scheduler
from torchport.train.resume import (
    Position,
    load_for_resume,
    rank_state,
    restore,
    start_fresh,
    training_state,
    trim_metrics,
)
from torchport.train.sampling import EpochBatchSampler
from torchport.train.tasks import TaskAdapter, make_task

PROGRESS_SECONDS = 0.2  # redraw the bar at most this often: a redraw costs more than a small model's step


def configure_torch(config: Config) -> None:
    torch.manual_seed(config.seed)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class Training:
    """One run's parts, built once; the loop then only moves ``position`` (and the sample count) forward."""

    config: Config
    run_dir: Path
    world: World
    device: torch.device
    data: DataSplits
    meta: ModelMeta
    model: nn.Module  # the plain module: checkpoints and evaluation read it
    network: nn.Module  # what the forward pass runs: ``model`` itself, or its DDP / DataParallel wrapper
    task: TaskAdapter
    sampler: EpochBatchSampler
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scheduler_interval: str | None  # "step" or "epoch"
    config_hash: str
    position: Position = field(default_factory=Position)
    started: float = 0.0  # perf_counter() when the first step began
    trained_samples: int = 0  # by this rank, since ``started``


def evaluate(
    model: nn.Module,
    split: Split,
    task: TaskAdapter,
    batch_size: int,
    device: torch.device,
    world: World | None = None,
) -> dict[str, float]:
    """Loss and the task's metric over a whole split, in eval mode.

    Under DDP each rank runs every world_size-th sample and the outputs are gathered, so every rank computes
    the metric over the same whole split and reports the same number. ``model`` is the plain module, never
    the DDP wrapper: its forward would start collectives that ranks with fewer batches never join.
    """
    world = world or World()
    if len(split.x) == 0:
        return {}
    indices = distributed.shard(len(split.x), world)
    inputs, targets = split.x[indices.start :: indices.step], split.y[indices.start :: indices.step]
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            batch = torch.as_tensor(inputs[start : start + batch_size]).to(device)
            outputs.append(model(batch).cpu())
    model.train()
    mine = (torch.cat(outputs) if outputs else torch.empty(0), torch.as_tensor(targets))
    gathered = [part for part in distributed.all_gather_objects(mine, world) if len(part[1])]
    return task.metrics(torch.cat([o for o, _ in gathered]), torch.cat([t for _, t in gathered]))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[throughput]:.0f} samples/s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def train(
    config: Config,
    run_dir: Path | None = None,
    resume: bool = False,
    console: Console | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``config`` in ``run_dir``; return the summary that is also written to ``summary.json``.

    Under torchrun this joins the process group, runs the same loop as DDP and leaves the group at the end;
    every rank returns the same summary. After an elastic restart it resumes from the last checkpoint.
    Rank 0 holds the run directory's lock throughout; a run dir with checkpoints needs ``resume`` or ``overwrite``.
    Quiet unless given a ``console`` to show the epochs and the progress bar on.
    """
    console = console if console is not None else Console(quiet=True)
    world, device = distributed.setup(config.train, console if env_rank() == 0 else None)
    held = contextlib.ExitStack()
    try:
        run_dir = Path(run_dir or default_run_dir(config))
        say = console if world.is_writer else Console(quiet=True)
        resuming = resume or world.restart_count > 0
        distributed.on_writer(lambda: _claim(held, run_dir, resuming, overwrite, say), world)
        return _train(config, run_dir, resume, say, world, device)
    except Exception as exc:
        if world.distributed and distributed.is_group_failure(exc):
            raise distributed.lost_group(exc, world.rank, config.train.dist_timeout_s, "training") from exc
        raise
    finally:
        held.close()
        distributed.teardown(world)


def _claim(held: contextlib.ExitStack, run_dir: Path, resuming: bool, overwrite: bool, console: Console) -> None:
    """Take the run directory for this run (see runlock.py); never replace an earlier run's checkpoints unasked."""
    previous = held.enter_context(run_dir_lock(run_dir, "train"))
    if previous:
        console.print(
            f"[yellow]note:[/] took over the lock of {run_dir} from {previous}, which ended without releasing it"
        )
    if not resuming and not overwrite and has_checkpoints(run_dir):
        raise UsageError(
            f"{run_dir} holds the checkpoints of an earlier run; add --resume to continue it, or --overwrite to"
            " start over (its checkpoints are deleted)"
        )


def _train(
    config: Config, run_dir: Path | None, resume: bool, console: Console, world: World, device: torch.device
) -> dict[str, Any]:
    run = _assemble(config, Path(run_dir or default_run_dir(config)), world, device, console)
    # After an elastic restart (torchrun restarted the whole group) every rank picks up the last checkpoint.
    if resume or world.restart_count > 0:
        _resume(run, resume, console)
    if world.is_writer:
        _prepare_run_dir(run)
    loader = batch_loader(run.data.train, run.sampler, config.data.num_workers, config.seed)
    run.started = time.perf_counter()
    run.network.train()
    with (
        _progress(console) as progress,
        CheckpointWriter(run.run_dir / "checkpoints", enabled=world.is_writer) as writer,
    ):
        while run.position.epoch < config.train.epochs:
            _run_epoch(run, loader, progress, writer, console)

    elapsed = time.perf_counter() - run.started
    trained = int(distributed.all_reduce_sum([run.trained_samples], world)[0])

    def write_summary() -> dict[str, Any]:
        summary = _summary(run, trained, elapsed)
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    return distributed.on_writer(write_summary, world)


def _assemble(config: Config, run_dir: Path, world: World, device: torch.device, console: Console) -> Training:
    """Data, model, optimizer and batch order, built in one fixed order: model init draws from the seeded RNG."""
    configure_torch(config)
    data = load_data(config.data, config.seed)
    meta = model_meta(data)
    model = build_model(model_spec(config, meta)).to(device)
    distributed.seed_rank_streams(config.seed, world)
    network = distributed.wrap_model(model, world, device, config.train.sync_batchnorm, console)
    task = make_task(config.train, data)
    batch_size = config.data.batch_size
    sampler = EpochBatchSampler(
        len(data.train.x), batch_size, config.seed, rank=world.rank, world_size=world.world_size
    )
    optimizer = build_optimizer(config.train, model.parameters())
    scheduler = build_scheduler(config.train, optimizer, sampler.batches_per_epoch())
    return Training(
        config=config,
        run_dir=run_dir,
        world=world,
        device=device,
        data=data,
        meta=meta,
        model=model,
        network=network,
        task=task,
        sampler=sampler,
        optimizer=optimizer,
        scheduler=scheduler,
        scheduler_interval=config.train.scheduler.interval if config.train.scheduler else None,
        config_hash=config.hash(),
    )


def _resume(run: Training, required: bool, console: Console) -> None:
    """Continue from the newest good checkpoint; each newer one refused on the way is one line."""
    checkpoints = run.run_dir / "checkpoints"
    found = distributed.on_writer(
        lambda: load_for_resume(checkpoints, run.config_hash, run.world, required, run.model), run.world
    )
    if found is None:
        return
    for line in found.refused:
        console.print(f"[yellow]skipped:[/] {line}")
    run.position = restore(found.state, run.model, run.optimizer, run.scheduler, run.world)
    console.print(f"resumed from {found.path} at epoch {run.position.epoch + 1}, step {run.position.step_in_epoch}")


def _prepare_run_dir(run: Training) -> None:
    """Rank 0: metrics of the epochs a resumed run repeats are dropped, a fresh run starts an empty directory."""
    if run.position.global_step:
        trim_metrics(run.run_dir / "metrics.jsonl", run.position.epoch)
    else:
        start_fresh(run.run_dir)
    (run.run_dir / "config.yaml").write_text(run.config.to_yaml())


def _run_epoch(
    run: Training,
    loader: torch.utils.data.DataLoader[Batch],
    progress: Progress,
    writer: CheckpointWriter,
    console: Console,
) -> None:
    """The rest of the current epoch, then its evaluation, record and checkpoint."""
    position, epochs = run.position, run.config.train.epochs
    epoch_started = time.perf_counter()
    run.sampler.set_epoch(position.epoch, skip=position.step_in_epoch)
    bar = progress.add_task(
        "train",
        total=run.sampler.batches_per_epoch(),
        completed=position.step_in_epoch,
        epoch=f"{position.epoch + 1}/{epochs}",
        loss=math.nan,
        throughput=0.0,
    )
    _train_steps(run, loader, progress, bar, writer)
    progress.remove_task(bar)

    if run.scheduler is not None and run.scheduler_interval == "epoch":
        run.scheduler.step()
    record = _end_of_epoch(run, time.perf_counter() - epoch_started)
    improved = _update_best(position, record, run.task)
    position.epoch += 1
    position.step_in_epoch = 0
    position.loss_sum, position.loss_samples = 0.0, 0
    _checkpoint(run, writer, best=improved)
    if run.world.is_writer:
        with open(run.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
    console.print(_epoch_line(record, epochs))


def _train_steps(
    run: Training,
    loader: torch.utils.data.DataLoader[Batch],
    progress: Progress,
    bar: TaskID,
    writer: CheckpointWriter,
) -> None:
    """The epoch's remaining batches: a step each, a checkpoint every ``checkpoint_every_steps``."""
    position, device, every = run.position, run.device, run.config.train.checkpoint_every_steps
    # The epoch's loss is summed on the device: a .item() per step would wait for the GPU every step.
    loss_sum = torch.tensor(position.loss_sum, dtype=torch.float64, device=device)
    shown_at = time.perf_counter()
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        loss = _step(run, inputs, targets)
        position.step_in_epoch += 1
        position.global_step += 1
        loss_sum.add_(loss.detach(), alpha=len(inputs))
        position.loss_samples += len(inputs)
        run.trained_samples += len(inputs)
        if every and position.global_step % every == 0:
            position.loss_sum = float(loss_sum)
            _checkpoint(run, writer)
        if time.perf_counter() - shown_at > PROGRESS_SECONDS:
            rate = run.trained_samples * run.world.world_size / (time.perf_counter() - run.started)
            progress.update(bar, completed=position.step_in_epoch, loss=loss.item(), throughput=rate)
            shown_at = time.perf_counter()
    position.loss_sum = float(loss_sum)


def _step(run: Training, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One optimizer step on one batch; returns the batch's loss, still on the device."""
    run.optimizer.zero_grad(set_to_none=True)
    loss = run.task.loss(run.network(inputs), targets)
    loss.backward()
    if run.config.train.grad_clip:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.train.grad_clip)
    run.optimizer.step()
    if run.scheduler is not None and run.scheduler_interval == "step":
        run.scheduler.step()
    return loss


def _checkpoint(run: Training, writer: CheckpointWriter, best: bool = False) -> None:
    """Every rank calls this at the same step (it gathers the ranks' RNG states); rank 0 writes."""
    ranks = distributed.all_gather_objects(rank_state(run.position, run.device), run.world)
    state = training_state(run.model, run.optimizer, run.scheduler, run.position, run.config_hash, run.meta, ranks)
    writer.submit(state, run.position.global_step, best)


def _end_of_epoch(run: Training, seconds: float) -> dict[str, Any]:
    """The epoch's record, the same on every rank: losses and metrics are summed over ranks."""
    position = run.position
    val = evaluate(run.model, run.data.val, run.task, run.config.data.eval_batch_size, run.device, run.world)
    loss_sum, loss_samples = distributed.all_reduce_sum([position.loss_sum, position.loss_samples], run.world)
    return {
        "epoch": position.epoch,
        "step": position.global_step,
        "train_loss": loss_sum / max(loss_samples, 1),
        **{f"val_{name}": value for name, value in val.items()},
        "seconds": round(seconds, 4),
    }


def _update_best(position: Position, record: dict[str, Any], task: TaskAdapter) -> bool:
    value = record.get(f"val_{task.metric}", record["train_loss"])
    better = position.best_value is None or (
        value > position.best_value
        if task.higher_is_better and f"val_{task.metric}" in record
        else value < position.best_value
    )
    if better:
        position.best_value, position.best_epoch = float(value), position.epoch
    return better


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "step", "seconds"))
    return f"epoch {record['epoch'] + 1}/{epochs}  {metrics}  ({record['seconds']:.1f} s)"


def _summary(run: Training, trained_samples: int, elapsed: float) -> dict[str, Any]:
    """``trained_samples`` counts all ranks; ``batch_size`` is per process, so the global batch is world x it."""
    config, data, world = run.config, run.data, run.world
    lines = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    final = lines[-1] if lines else {}
    best = next((line for line in lines if line["epoch"] == run.position.best_epoch), final)
    return {
        "name": config.name,
        "config_hash": config.hash(),
        "task": data.task,
        "metric": f"val_{run.task.metric}",
        "epochs": config.train.epochs,
        "steps": run.position.global_step,
        "final": final,
        "best": best,
        "samples_per_second": round(trained_samples / elapsed, 1) if elapsed > 0 else None,
        "train_seconds": round(elapsed, 3),
        "world_size": world.world_size,
        "strategy": world.strategy,
        "backend": world.backend,
        "batch_size_per_process": config.data.batch_size,
        "global_batch_size": config.data.batch_size * world.world_size,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "samples": {"train": len(data.train.x), "val": len(data.val.x), "test": len(data.test.x)},
    }
