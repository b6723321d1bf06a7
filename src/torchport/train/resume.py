"""The resume format: what a training checkpoint holds, how it is put back, and which checkpoint to resume from.

A checkpoint holds the whole training state — weights, optimizer, scheduler, every rank's RNG streams, the
position in the epoch, the config hash and the model's description (``ModelMeta``) — so that a run resumed
from it ends bitwise equal to one left alone. ``checkpoint.py`` below this is only atomic files and checksums.

Every checkpoint names its ``format``; one written in another format (or in none) is refused with one line,
and ``--resume`` falls back to the previous checkpoint just as it does past a damaged one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchport.errors import CheckpointError
from torchport.models.spec import ModelMeta
from torchport.train.checkpoint import load_checkpoint, load_latest_good, resume_candidates
from torchport.train.distributed import World

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
    # Early stopping (stopping.py): the best value of its metric, epochs since it improved, the epoch it stopped.
    stop_best: float | None = None
    stale_epochs: int = 0
    stopped_epoch: int | None = None


@dataclass
class Resumable:
    """The checkpoint a run resumes from, and a line for each newer one refused on the way."""

    path: Path
    state: dict[str, Any]
    refused: list[str]


def rank_state(position: Position, device: torch.device) -> dict[str, Any]:
    """What differs between ranks: the RNG streams (dropout) and the running loss of the epoch so far."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {"rng": rng, "loss_sum": position.loss_sum, "loss_samples": position.loss_samples}


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: Position,
    config_hash: str,
    meta: ModelMeta,
    ranks: list[dict[str, Any]],
    scaler: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint's content; ``ranks`` holds every rank's ``rank_state``, rank 0's first; ``scaler`` is the fp16
    GradScaler's state (its loss scale), None in fp32 and bf16."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": ranks[0]["rng"],
        "position": dict(vars(position)),
        "config_hash": config_hash,
        "meta": meta.to_dict(),
        "world_size": len(ranks),
        "ranks": ranks,
        "scaler": scaler,
    }


def restore(
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


def check_format(path: Path, state: dict[str, Any]) -> None:
    """Refuse a checkpoint of another format: its keys may mean something else, so nothing of it is read."""
    found = state.get("format")
    if found != CHECKPOINT_FORMAT:
        written = "no format version" if found is None else f"format version {found!r}"
        raise CheckpointError(
            f"checkpoint {path} has {written}, but this torchport reads format version {CHECKPOINT_FORMAT} only"
        )


def load_trained_model(path: Path) -> tuple[ModelMeta, dict[str, torch.Tensor]]:
    """What export needs of a checkpoint: the model's description and its weights."""
    state = load_checkpoint(path)
    check_format(path, state)
    return ModelMeta.from_dict(state.get("meta"), str(path)), state["model"]


def load_for_resume(
    checkpoints: Path, config_hash: str, world: World, required: bool, model: nn.Module
) -> Resumable | None:
    """The newest good checkpoint (rank 0 reads it). ``required`` is False after an elastic restart that came
    before the first checkpoint: then the group simply starts from the beginning."""
    if not required and not any(path.exists() for path in resume_candidates(checkpoints)):
        return None
    path, state, refused = load_latest_good(checkpoints, check=lambda path, state: _usable(path, state, model))
    if state.get("config_hash") != config_hash:
        raise CheckpointError(
            f"{path} was written by a different config (hash {state.get('config_hash')} != {config_hash});"
            " resume with the run's own config.yaml"
        )
    _check_world_size(path, int(state.get("world_size", 1)), world, required)
    return Resumable(path, state, refused)


def _check_world_size(path: Path, written_by: int, world: World, required: bool) -> None:
    """Exact resume replays every rank's RNG stream and batch order: it needs the world that wrote them."""
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


def _usable(path: Path, state: dict[str, Any], model: nn.Module) -> None:
    """A checkpoint of another format, or of another model, is refused like a damaged one."""
    check_format(path, state)
    _fits(path, state, model)


def _fits(path: Path, state: dict[str, Any], model: nn.Module) -> None:
    """A checkpoint whose weights are another model's (names or shapes) does not fit."""
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    weights = state["model"] if isinstance(state.get("model"), dict) else {}
    found = {name: tuple(getattr(value, "shape", ())) for name, value in weights.items()}
    for name in [*expected, *found]:
        if expected.get(name) != found.get(name):
            theirs, ours = (f"shape {d[name]}" if name in d else "missing" for d in (found, expected))
            raise CheckpointError(f"checkpoint {path} does not fit the model: '{name}' is {theirs}, the model's {ours}")


def trim_metrics(path: Path, before_epoch: int) -> None:
    """On resume, drop metric lines of epochs that will be run again (a crash can land between the two)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] < before_epoch]
    path.write_text("".join(line + "\n" for line in kept))


def start_fresh(run_dir: Path) -> None:
    """A new run in a used run directory: drop the old run's metrics, event files and checkpoints, so that neither a
    resume nor an elastic restart can ever pick up weights from a different run."""
    checkpoints = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("")
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)  # the old run's curves would mix with the new
    if checkpoints.is_dir():
        for path in checkpoints.iterdir():
            if path.is_file() and (path.name.startswith(("ckpt-", "last.pt", "best.pt"))):
                path.unlink()
