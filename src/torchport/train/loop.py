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
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from torch import nn

from torchport.config import Config, default_run_dir
from torchport.data import load_data
from torchport.data.augment import build_augment
from torchport.data.loaders import Batch, batch_loader
from torchport.errors import UsageError
from torchport.models.compose import build_model
from torchport.models.spec import model_meta, model_spec
from torchport.runlock import has_checkpoints, run_dir_lock
from torchport.train import distributed
from torchport.train.checkpoint import CheckpointWriter
from torchport.train.distributed import World
from torchport.train.evaluation import evaluate, evaluate_test_split
from torchport.train.launch import env_rank
from torchport.train.loggers import Loggers
from torchport.train.optim import build_optimizer, build_scheduler
from torchport.train.precision import make_precision
from torchport.train.resume import (
    load_for_resume,
    rank_state,
    restore,
    start_fresh,
    training_state,
    trim_metrics,
)
from torchport.train.run import Training, run_summary, update_best
from torchport.train.sampling import EpochBatchSampler
from torchport.train.stopping import make_stopping, update_stopping
from torchport.train.tasks import make_task

PROGRESS_SECONDS = 0.2  # redraw the bar at most this often: a redraw costs more than a small model's step


def configure_torch(config: Config) -> None:
    torch.manual_seed(config.seed)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _progress(console: Console) -> Progress:
    """The epoch's bar, redrawn only when the loop says (``refresh=True``), never by a thread of rich's own: that
    thread takes the GIL ten times a second, and each time the training thread waits for it to give the GIL back
    at the end of its next backward pass (6–10 % of the digits CNN's samples/s on two cores)."""
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[throughput]:.0f} samples/s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        auto_refresh=False,
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
    augment = build_augment(config.data.augment, config.seed, run.data.input_shape)  # training batches only
    loader = batch_loader(
        run.data.train, run.sampler, config.data.num_workers, config.seed, augment, pin_memory=run.device.type == "cuda"
    )
    run.started = time.perf_counter()
    run.network.train()
    resumed = run.position.global_step > 0
    with Loggers(config, run.run_dir, run.position.epoch, resumed, world.is_writer) as loggers:
        with (
            _progress(console) as progress,
            CheckpointWriter(run.run_dir / "checkpoints", enabled=world.is_writer) as writer,
        ):
            while run.position.epoch < config.train.epochs and run.position.stopped_epoch is None:
                _run_epoch(run, loader, progress, writer, console, loggers)

        elapsed = time.perf_counter() - run.started
        trained = int(distributed.all_reduce_sum([run.trained_samples], world)[0])

        def write_summary() -> dict[str, Any]:
            summary = run_summary(run, trained, elapsed)
            # After the checkpoint writer has closed: the checkpoint export will read is on disk.
            summary["test_checkpoint"] = config.export.checkpoint
            summary["test"] = _test_metrics(run)
            loggers.final(summary["test"], run.position.epoch)
            (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            return summary

        return distributed.on_writer(write_summary, world)


def _test_metrics(run: Training) -> dict[str, float]:
    """Rank 0: the test split's metrics with the checkpoint export will use (``export.checkpoint``)."""
    checkpoint = run.run_dir / "checkpoints" / f"{run.config.export.checkpoint}.pt"
    batch_size = run.config.data.eval_batch_size
    return evaluate_test_split(run.model, checkpoint, run.data.test, run.task, batch_size, run.device)


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
    # A step-interval scheduler steps once per optimizer step: accumulate_steps batches (fewer at an epoch's end).
    steps_per_epoch = math.ceil(sampler.batches_per_epoch() / config.train.accumulate_steps)
    scheduler = build_scheduler(config.train, optimizer, steps_per_epoch)
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
        precision=make_precision(config.train.precision, device),
        stopping=make_stopping(config.train.early_stopping, task, len(data.val.x) > 0),
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
    run.precision.load_state_dict(found.state.get("scaler"))
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
    loggers: Loggers,
) -> None:
    """The rest of the current epoch, then its evaluation, record (metrics.jsonl, the loggers) and checkpoint."""
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
    progress.refresh()
    _train_steps(run, loader, progress, bar, writer)
    progress.remove_task(bar)
    progress.refresh()

    if run.scheduler is not None and run.scheduler_interval == "epoch":
        run.scheduler.step()
    record = _end_of_epoch(run, time.perf_counter() - epoch_started)
    improved = update_best(position, record, run.task)
    if update_stopping(run.stopping, position, record) and run.stopping is not None:
        console.print(f"stopping early: {run.stopping.metric} has not improved for {run.stopping.patience} epoch(s)")
    position.epoch += 1
    position.step_in_epoch = 0
    position.loss_sum, position.loss_samples = 0.0, 0
    _checkpoint(run, writer, best=improved)
    if run.world.is_writer:
        with open(run.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        loggers.epoch(record)
    console.print(_epoch_line(record, epochs))


def _train_steps(
    run: Training,
    loader: torch.utils.data.DataLoader[Batch],
    progress: Progress,
    bar: TaskID,
    writer: CheckpointWriter,
) -> None:
    """The epoch's remaining batches, an optimizer step every ``accumulate_steps`` of them (and at the epoch's
    end); a checkpoint at the first optimizer step on or past each multiple of ``checkpoint_every_steps``.

    Steps count batches, so the sampler resumes at a step; checkpoints fall on optimizer steps only, so no
    half-accumulated gradient is ever lost by a resume (there is none to save).
    """
    position, device, every = run.position, run.device, run.config.train.checkpoint_every_steps
    accumulate, batches = run.config.train.accumulate_steps, run.sampler.batches_per_epoch()
    saved_at = position.global_step
    # The epoch's loss is summed on the device: a .item() per step would wait for the GPU every step.
    loss_sum = torch.tensor(position.loss_sum, dtype=torch.float64, device=device)
    shown_at = time.perf_counter()
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        first = position.step_in_epoch - position.step_in_epoch % accumulate
        group = min(accumulate, batches - first)
        at_step = position.step_in_epoch + 1 == first + group
        loss = _step(run, inputs, targets, position.step_in_epoch == first, at_step, group)
        position.step_in_epoch += 1
        position.global_step += 1
        loss_sum.add_(loss.detach(), alpha=len(inputs))
        position.loss_samples += len(inputs)
        run.trained_samples += len(inputs)
        if every and at_step and position.global_step // every > saved_at // every:
            position.loss_sum, saved_at = float(loss_sum), position.global_step
            _checkpoint(run, writer)
        if time.perf_counter() - shown_at > PROGRESS_SECONDS:
            rate = run.trained_samples * run.world.world_size / (time.perf_counter() - run.started)
            progress.update(bar, completed=position.step_in_epoch, loss=loss.item(), throughput=rate, refresh=True)
            shown_at = time.perf_counter()
    position.loss_sum = float(loss_sum)


def _step(
    run: Training, inputs: torch.Tensor, targets: torch.Tensor, first: bool, last: bool, group: int
) -> torch.Tensor:
    """Forward and backward of one batch of a ``group`` accumulated into one optimizer step, taken on the
    ``last``; returns the batch's (unscaled) loss, still on the device."""
    if first:
        run.optimizer.zero_grad(set_to_none=True)
    # DDP all-reduces gradients on the group's last backward only; the others accumulate locally.
    no_sync = getattr(run.network, "no_sync", None)
    with contextlib.nullcontext() if last or no_sync is None else no_sync():
        with run.precision.autocast():
            loss = run.task.loss(run.network(inputs), targets)
        run.precision.backward(loss / group if group > 1 else loss)
    if not last:
        return loss
    if run.config.train.grad_clip:
        run.precision.unscale(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.train.grad_clip)
    run.precision.step(run.optimizer)
    if run.scheduler is not None and run.scheduler_interval == "step":
        run.scheduler.step()
    return loss


def _checkpoint(run: Training, writer: CheckpointWriter, best: bool = False) -> None:
    """Every rank calls this at the same step (it gathers the ranks' RNG states); rank 0 writes."""
    ranks = distributed.all_gather_objects(rank_state(run.position, run.device), run.world)
    state = training_state(
        run.model,
        run.optimizer,
        run.scheduler,
        run.position,
        run.config_hash,
        run.meta,
        ranks,
        run.precision.state_dict(),
    )
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


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch", "step", "seconds"))
    return f"epoch {record['epoch'] + 1}/{epochs}  {metrics}  ({record['seconds']:.1f} s)"
