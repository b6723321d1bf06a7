"""The training loop: forward, loss, backward, step, metrics, checkpoint — readable top to bottom.

Everything that decides the final weights is a function of the config and the seed: model init, batch order
(per epoch, see sampling.py), dropout (the torch RNG state travels in the checkpoint). That is what makes a
run killed mid-epoch and resumed end with weights bitwise equal to a run left alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from torchport.config import Config, default_run_dir
from torchport.data import DataSplits, Split, load_data
from torchport.errors import CheckpointError, UsageError
from torchport.models.compose import ModelSpec, build_model
from torchport.runlock import has_checkpoints, run_dir_lock
from torchport.train import distributed
from torchport.train.checkpoint import CheckpointWriter, load_latest_good, resume_candidates
from torchport.train.distributed import World
from torchport.train.launch import env_rank
from torchport.train.optim import build_optimizer, build_scheduler
from torchport.train.sampling import EpochBatchSampler
from torchport.train.tasks import TaskAdapter, make_task

CHECKPOINT_FORMAT = 1
PROGRESS_SECONDS = 0.2  # redraw the bar at most this often: a redraw costs more than a small model's step


@dataclass
class Position:
    """Where training stands: the next batch to run is batch ``step_in_epoch`` of ``epoch``."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    loss_samples: int = 0
    best_value: float | None = None
    best_epoch: int | None = None


def model_meta(data: DataSplits) -> dict[str, Any]:
    """What export and verification need to rebuild and describe the model without reloading the data."""
    return {
        "task": data.task,
        "input_shape": list(data.input_shape),
        "input_dtype": data.input_dtype,
        "num_outputs": data.num_outputs,
        "class_names": list(data.class_names),
        "feature_names": list(data.feature_names),
        "input_mean": torch.as_tensor(data.input_mean, dtype=torch.float32),
        "input_std": torch.as_tensor(data.input_std, dtype=torch.float32),
        "target_mean": None if data.target_mean is None else torch.as_tensor(data.target_mean),
        "target_std": None if data.target_std is None else torch.as_tensor(data.target_std),
        "input_min": float(data.input_min),
        "input_max": float(data.input_max),
        "source": data.source,
    }


def model_spec(config: Config, meta: dict[str, Any]) -> ModelSpec:
    return ModelSpec(
        layers=config.model.layers,
        input_shape=tuple(meta["input_shape"]),
        input_dtype=meta["input_dtype"],
        num_outputs=int(meta["num_outputs"]),
        input_mean=meta["input_mean"].numpy(),
        input_std=meta["input_std"].numpy(),
        import_paths=list(config.import_paths),
    )


def configure_torch(config: Config) -> None:
    torch.manual_seed(config.seed)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


# --------------------------------------------------------------------------------------------------------------


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


def _rank_state(position: Position, device: torch.device) -> dict[str, Any]:
    """What differs between ranks: the RNG streams (dropout) and the running loss of the epoch so far."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {"rng": rng, "loss_sum": position.loss_sum, "loss_samples": position.loss_samples}


def _state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: Position,
    config_hash: str,
    meta: dict[str, Any],
    ranks: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": ranks[0]["rng"],
        "position": dict(vars(position)),
        "config_hash": config_hash,
        "meta": meta,
        "world_size": len(ranks),
        "ranks": ranks,
    }


def _restore(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, world: World
) -> Position:
    """Load a checkpoint into this rank; the weights and optimizer are rank 0's (DDP keeps them identical)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    position = Position(**state["position"])
    mine = state.get("ranks", [{"rng": state["rng"]}])[world.rank]
    torch.set_rng_state(mine["rng"]["torch"])
    if "cuda" in mine["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine["rng"]["cuda"])
    position.loss_sum = mine.get("loss_sum", position.loss_sum)
    position.loss_samples = mine.get("loss_samples", position.loss_samples)
    return position


def _load_for_resume(
    checkpoints: Path, config_hash: str, world: World, required: bool, model: nn.Module
) -> dict[str, Any] | None:
    """The newest good checkpoint (rank 0 reads it). ``required`` is False after an elastic restart that came
    before the first checkpoint: then the group simply starts from the beginning."""
    if not required and not any(path.exists() for path in resume_candidates(checkpoints)):
        return None
    path, state, refused = load_latest_good(checkpoints, check=lambda path, state: _fits(path, state, model))
    if state.get("config_hash") != config_hash:
        raise CheckpointError(
            f"{path} was written by a different config (hash {state.get('config_hash')} != {config_hash});"
            " resume with the run's own config.yaml"
        )
    written_by = int(state.get("world_size", 1))
    if written_by != world.world_size and not required:
        what = "start the missing node(s) again" if world.world_size < written_by else "run on the same nodes"
        raise CheckpointError(
            f"the group re-formed with {world.world_size} process(es) after a restart (nodes left or joined the"
            f" elastic job) but {path} was written by {written_by}; exact resume needs the same number: {what}"
            " and rerun every node with --resume"
        )
    if written_by != world.world_size:
        raise CheckpointError(
            f"{path} was written by {written_by} process(es) but this run has {world.world_size}; exact resume needs"
            f" the same number (--nproc-per-node x nodes = {written_by})"
        )
    return {"path": str(path), "state": state, "refused": refused}


def _fits(path: Path, state: dict[str, Any], model: nn.Module) -> None:
    """A checkpoint whose weights are another model's (names or shapes) is refused like a damaged one."""
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    weights = state["model"] if isinstance(state.get("model"), dict) else {}
    found = {name: tuple(getattr(value, "shape", ())) for name, value in weights.items()}
    for name in [*expected, *found]:
        if expected.get(name) != found.get(name):
            theirs, ours = (f"shape {d[name]}" if name in d else "missing" for d in (found, expected))
            raise CheckpointError(f"checkpoint {path} does not fit the model: '{name}' is {theirs}, the model's {ours}")


def _trim_metrics(path: Path, before_epoch: int) -> None:
    """On resume, drop metric lines of epochs that will be run again (a crash can land between the two)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] < before_epoch]
    path.write_text("".join(line + "\n" for line in kept))


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
    """
    console = console or Console()
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
    run_dir = Path(run_dir or default_run_dir(config))
    checkpoints = run_dir / "checkpoints"
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
    interval = config.train.scheduler.interval if config.train.scheduler else None
    config_hash = config.hash()

    position = Position()
    # After an elastic restart (torchrun restarted the whole group) every rank picks up the last checkpoint.
    if resume or world.restart_count > 0:
        found = distributed.on_writer(lambda: _load_for_resume(checkpoints, config_hash, world, resume, model), world)
        if found is not None:
            for line in found["refused"]:
                console.print(f"[yellow]skipped:[/] {line}")
            position = _restore(found["state"], model, optimizer, scheduler, world)
            console.print(f"resumed from {found['path']} at epoch {position.epoch + 1}, step {position.step_in_epoch}")
    if world.is_writer:
        if position.global_step:
            _trim_metrics(run_dir / "metrics.jsonl", position.epoch)
        else:
            start_fresh(run_dir)
        (run_dir / "config.yaml").write_text(config.to_yaml())

    def checkpoint(best: bool = False) -> None:
        """Every rank calls this at the same step (it gathers the ranks' RNG states); rank 0 writes."""
        ranks = distributed.all_gather_objects(_rank_state(position, device), world)
        state = _state(model, optimizer, scheduler, position, config_hash, meta, ranks)
        writer.submit(state, position.global_step, best)

    loader = torch.utils.data.DataLoader(
        TensorBatches(torch.as_tensor(data.train.x), torch.as_tensor(data.train.y)),
        batch_sampler=sampler,
        collate_fn=_whole_batch,
        num_workers=config.data.num_workers,
        # Its own generator: a DataLoader otherwise draws a seed from the global RNG at every epoch start,
        # which would shift the dropout stream of a run resumed mid-epoch.
        generator=torch.Generator().manual_seed(config.seed),
    )
    started = time.perf_counter()
    trained_samples = 0
    network.train()
    with _progress(console) as progress, CheckpointWriter(checkpoints, enabled=world.is_writer) as writer:
        while position.epoch < config.train.epochs:
            epoch_started = time.perf_counter()
            sampler.set_epoch(position.epoch, skip=position.step_in_epoch)
            bar = progress.add_task(
                "train",
                total=sampler.batches_per_epoch(),
                completed=position.step_in_epoch,
                epoch=f"{position.epoch + 1}/{config.train.epochs}",
                loss=math.nan,
                throughput=0.0,
            )
            # The epoch's loss is summed on the device: a .item() per step would wait for the GPU every step.
            loss_sum = torch.tensor(position.loss_sum, dtype=torch.float64, device=device)
            shown_at = time.perf_counter()
            for inputs, targets in loader:
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                loss = task.loss(network(inputs), targets)
                loss.backward()
                if config.train.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
                optimizer.step()
                if scheduler is not None and interval == "step":
                    scheduler.step()
                position.step_in_epoch += 1
                position.global_step += 1
                loss_sum.add_(loss.detach(), alpha=len(inputs))
                position.loss_samples += len(inputs)
                trained_samples += len(inputs)
                every = config.train.checkpoint_every_steps
                if every and position.global_step % every == 0:
                    position.loss_sum = float(loss_sum)
                    checkpoint()
                if time.perf_counter() - shown_at > PROGRESS_SECONDS:
                    rate = trained_samples * world.world_size / (time.perf_counter() - started)
                    progress.update(bar, completed=position.step_in_epoch, loss=loss.item(), throughput=rate)
                    shown_at = time.perf_counter()
            position.loss_sum = float(loss_sum)
            progress.remove_task(bar)

            if scheduler is not None and interval == "epoch":
                scheduler.step()
            record = _end_of_epoch(
                model, data, task, config, device, position, time.perf_counter() - epoch_started, world
            )
            improved = _update_best(position, record, task)
            position.epoch += 1
            position.step_in_epoch = 0
            position.loss_sum, position.loss_samples = 0.0, 0
            checkpoint(best=improved)
            if world.is_writer:
                with open(run_dir / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
            console.print(_epoch_line(record, config.train.epochs))

    elapsed = time.perf_counter() - started
    trained = int(distributed.all_reduce_sum([trained_samples], world)[0])

    def write_summary() -> dict[str, Any]:
        summary = _summary(config, run_dir, position, task, data, trained, elapsed, model, world)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    return distributed.on_writer(write_summary, world)


class TensorBatches(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """In-memory tensors served a whole batch at a time: one indexing per batch instead of a Python call and
    a stack per sample, which on small models costs as much as the forward pass."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.inputs[index], self.targets[index]


def _whole_batch(batch: Any) -> Any:
    """``TensorBatches`` already returns the batch as two tensors: nothing left to collate."""
    return batch


def start_fresh(run_dir: Path) -> None:
    """A new run in a used run directory: drop the old run's metrics and checkpoints, so that neither a
    resume nor an elastic restart can ever pick up weights from a different run."""
    checkpoints = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("")
    if checkpoints.is_dir():
        for path in checkpoints.iterdir():
            if path.is_file() and (path.name.startswith(("ckpt-", "last.pt", "best.pt"))):
                path.unlink()


def _end_of_epoch(
    model: nn.Module,
    data: DataSplits,
    task: TaskAdapter,
    config: Config,
    device: torch.device,
    position: Position,
    seconds: float,
    world: World,
) -> dict[str, Any]:
    """The epoch's record, the same on every rank: losses and metrics are summed over ranks."""
    val = evaluate(model, data.val, task, config.data.eval_batch_size, device, world)
    loss_sum, loss_samples = distributed.all_reduce_sum([position.loss_sum, position.loss_samples], world)
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


def _summary(
    config: Config,
    run_dir: Path,
    position: Position,
    task: TaskAdapter,
    data: DataSplits,
    trained_samples: int,
    elapsed: float,
    model: nn.Module,
    world: World,
) -> dict[str, Any]:
    """``trained_samples`` counts all ranks; ``batch_size`` is per process, so the global batch is world x it."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    final = lines[-1] if lines else {}
    best = next((line for line in lines if line["epoch"] == position.best_epoch), final)
    return {
        "name": config.name,
        "config_hash": config.hash(),
        "task": data.task,
        "metric": f"val_{task.metric}",
        "epochs": config.train.epochs,
        "steps": position.global_step,
        "final": final,
        "best": best,
        "samples_per_second": round(trained_samples / elapsed, 1) if elapsed > 0 else None,
        "train_seconds": round(elapsed, 3),
        "world_size": world.world_size,
        "strategy": world.strategy,
        "backend": world.backend,
        "batch_size_per_process": config.data.batch_size,
        "global_batch_size": config.data.batch_size * world.world_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "samples": {"train": len(data.train.x), "val": len(data.val.x), "test": len(data.test.x)},
    }
