"""The training loop: forward, loss, backward, step, metrics, checkpoint — readable top to bottom.

Everything that decides the final weights is a function of the config and the seed: model init, batch order
(per epoch, see sampling.py), dropout (the torch RNG state travels in the checkpoint). That is what makes a
run killed mid-epoch and resumed end with weights bitwise equal to a run left alone.
"""

from __future__ import annotations

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

from torchport.config import Config
from torchport.data import DataSplits, Split, load_data
from torchport.errors import CheckpointError
from torchport.models.compose import ModelSpec, build_model
from torchport.train.checkpoint import load_latest_good, save_checkpoint, save_step_checkpoint
from torchport.train.optim import build_optimizer, build_scheduler
from torchport.train.sampling import EpochBatchSampler
from torchport.train.tasks import TaskAdapter, make_task

CHECKPOINT_FORMAT = 1


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_run_dir(config: Config) -> Path:
    return Path("runs") / config.name


# --------------------------------------------------------------------------------------------------------------


def evaluate(
    model: nn.Module, split: Split, task: TaskAdapter, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Loss and the task's metric over a whole split, in eval mode."""
    if len(split.x) == 0:
        return {}
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(split.x), batch_size):
            batch = torch.as_tensor(split.x[start : start + batch_size]).to(device)
            outputs.append(model(batch).cpu())
    model.train()
    return task.metrics(torch.cat(outputs), torch.as_tensor(split.y))


def _state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: Position,
    config_hash: str,
    meta: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": {"torch": torch.get_rng_state()},
        "position": dict(vars(position)),
        "config_hash": config_hash,
        "meta": meta,
    }


def _restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> Position:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    return Position(**state["position"])


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
    config: Config, run_dir: Path | None = None, resume: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Train ``config`` in ``run_dir``; return the summary that is also written to ``summary.json``."""
    console = console or Console()
    run_dir = Path(run_dir or default_run_dir(config))
    checkpoints = run_dir / "checkpoints"
    configure_torch(config)
    device = resolve_device(config.train.device)

    data = load_data(config.data, config.seed)
    meta = model_meta(data)
    model = build_model(model_spec(config, meta)).to(device)
    task = make_task(config.train, data)
    sampler = EpochBatchSampler(len(data.train.x), config.data.batch_size, config.seed)
    optimizer = build_optimizer(config.train, model.parameters())
    scheduler = build_scheduler(config.train, optimizer, sampler.batches_per_epoch())
    config_hash = config.hash()

    position = Position()
    if resume:
        path, state, refused = load_latest_good(checkpoints)
        for line in refused:
            console.print(f"[yellow]skipped:[/] {line}")
        if state.get("config_hash") != config_hash:
            raise CheckpointError(
                f"{path} was written by a different config (hash {state.get('config_hash')} != {config_hash});"
                " resume with the run's own config.yaml"
            )
        position = _restore(state, model, optimizer, scheduler)
        _trim_metrics(run_dir / "metrics.jsonl", position.epoch)
        console.print(f"resumed from {path} at epoch {position.epoch + 1}, step {position.step_in_epoch}")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text("")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())

    def checkpoint() -> None:
        save_step_checkpoint(
            _state(model, optimizer, scheduler, position, config_hash, meta),
            checkpoints,
            position.global_step,
        )

    tensors = (torch.as_tensor(data.train.x), torch.as_tensor(data.train.y))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*tensors),
        batch_sampler=sampler,
        num_workers=config.data.num_workers,
        # Its own generator: a DataLoader otherwise draws a seed from the global RNG at every epoch start,
        # which would shift the dropout stream of a run resumed mid-epoch.
        generator=torch.Generator().manual_seed(config.seed),
    )
    started = time.perf_counter()
    trained_samples = 0
    model.train()
    with _progress(console) as progress:
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
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = task.loss(model(inputs), targets)
                loss.backward()
                if config.train.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
                optimizer.step()
                if scheduler is not None and config.train.scheduler and config.train.scheduler.interval == "step":
                    scheduler.step()
                position.step_in_epoch += 1
                position.global_step += 1
                position.loss_sum += loss.item() * len(inputs)
                position.loss_samples += len(inputs)
                trained_samples += len(inputs)
                throughput = trained_samples / max(time.perf_counter() - started, 1e-9)
                progress.update(bar, advance=1, loss=loss.item(), throughput=throughput)
                every = config.train.checkpoint_every_steps
                if every and position.global_step % every == 0:
                    checkpoint()
            progress.remove_task(bar)

            if scheduler is not None and not (config.train.scheduler and config.train.scheduler.interval == "step"):
                scheduler.step()
            record = _end_of_epoch(model, data, task, config, device, position, time.perf_counter() - epoch_started)
            improved = _update_best(position, record, task)
            position.epoch += 1
            position.step_in_epoch = 0
            position.loss_sum, position.loss_samples = 0.0, 0
            state = _state(model, optimizer, scheduler, position, config_hash, meta)
            save_step_checkpoint(state, checkpoints, position.global_step)
            if improved:
                save_checkpoint(state, checkpoints / "best.pt")
            with open(run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            console.print(_epoch_line(record, config.train.epochs))

    elapsed = time.perf_counter() - started
    summary = _summary(config, run_dir, position, task, data, trained_samples, elapsed, model)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _end_of_epoch(
    model: nn.Module,
    data: DataSplits,
    task: TaskAdapter,
    config: Config,
    device: torch.device,
    position: Position,
    seconds: float,
) -> dict[str, Any]:
    val = evaluate(model, data.val, task, config.data.eval_batch_size, device)
    return {
        "epoch": position.epoch,
        "step": position.global_step,
        "train_loss": position.loss_sum / max(position.loss_samples, 1),
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
) -> dict[str, Any]:
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
        "world_size": 1,
        "batch_size_per_process": config.data.batch_size,
        "global_batch_size": config.data.batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "samples": {"train": len(data.train.x), "val": len(data.val.x), "test": len(data.test.x)},
    }
