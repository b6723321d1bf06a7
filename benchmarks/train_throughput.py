"""Training throughput, side by side: a minimal hand-written PyTorch loop, `torchport train` in one process,
and `torchport train --nproc-per-node 2` (DDP, gloo, one thread per process).

Every row trains the same model (the digits CNN of examples/digits.yaml, built once by torchport: a plain
nn.Module) on the same data with the same optimizer, batch size and epochs, and validate once per epoch; the
hand loop is what a user would write without torchport. What differs is the loop: torchport's adds the
progress bar, checkpoints, metrics and the seeded sampler, and that overhead is what the first ratio shows.
torchport always writes a durable checkpoint at each epoch's end; the hand loop that also ``torch.save``s every
N steps and each epoch, beside torchport with its step checkpoints on, is the like-for-like pair.
Lightning's Trainer on the same model and data is one more row where ``lightning`` imports (see
``lightning_trainer``). Process start-up (imports, data loading) is outside every figure.

    .venv/bin/python benchmarks/train_throughput.py [--epochs 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from train_data_common import train_summary

from torchport.config import Config, load_config
from torchport.data import load_data
from torchport.models.compose import build_model
from torchport.models.spec import model_meta, model_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "digits.yaml"


@dataclass
class Plain:
    """What the loops without torchport start from: torchport's model for the config (the very same network and
    init), a shuffling DataLoader over the training tensors, and the validation tensors."""

    model: nn.Module
    loader: DataLoader[tuple[torch.Tensor, ...]]
    samples: int  # training samples per epoch
    val_x: torch.Tensor
    val_y: torch.Tensor


def plain_setup(config: Config) -> Plain:
    torch.manual_seed(config.seed)
    data = load_data(config.data, config.seed)
    model = build_model(model_spec(config, model_meta(data)))
    train_set = TensorDataset(torch.as_tensor(data.train.x), torch.as_tensor(data.train.y))
    loader = DataLoader(train_set, batch_size=config.data.batch_size, shuffle=True)
    return Plain(model, loader, len(train_set), torch.as_tensor(data.val.x), torch.as_tensor(data.val.y))


def config_optimizer(config: Config, parameters: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """The config's optimizer (examples/digits.yaml: AdamW, lr 0.002, weight decay 0.0001), written as a user would."""
    settings = config.train.optimizer
    return getattr(torch.optim, settings.name)(parameters, **settings.kwargs())


def hand_loop(config: Config, save_every_steps: int | None = None) -> float:
    """The loop a user writes by hand: DataLoader, forward, loss, backward, step; validation each epoch.

    ``save_every_steps``: also ``torch.save`` the model and optimizer on the training thread every that many steps
    and at each epoch's end, as a hand loop that can resume would (no fsync, no checksum, no RNG state).
    """
    plain = plain_setup(config)
    model = plain.model
    optimizer = config_optimizer(config, model.parameters())
    criterion = nn.CrossEntropyLoss()
    with tempfile.TemporaryDirectory() as folder:
        started, step = time.perf_counter(), 0
        for _ in range(config.train.epochs):
            model.train()
            for inputs, targets in plain.loader:
                optimizer.zero_grad()
                criterion(model(inputs), targets).backward()
                optimizer.step()
                step += 1
                if save_every_steps and step % save_every_steps == 0:
                    _hand_save(model, optimizer, Path(folder))
            if save_every_steps:
                _hand_save(model, optimizer, Path(folder))
            model.eval()
            with torch.no_grad():
                (model(plain.val_x).argmax(1) == plain.val_y).float().mean().item()
        return plain.samples * config.train.epochs / (time.perf_counter() - started)


def _hand_save(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, folder / "last.pt")


def lightning_trainer(config: Config) -> float | None:
    """Lightning's Trainer on the same model, data, optimizer and batch, with its defaults (validation and a
    checkpoint each epoch) but no logger, bar or model summary; samples/s from the first epoch's start to the end
    of training, like torchport's. None when ``lightning`` is not importable (it is not a torchport dependency:
    ``pip install --no-deps --target DIR lightning lightning-utilities torchmetrics tqdm`` and PYTHONPATH=DIR keep
    the pinned torch untouched)."""
    try:
        import lightning
    except ImportError:
        return None
    logging.getLogger("lightning").setLevel(logging.ERROR)
    plain = plain_setup(config)
    network = plain.model
    val_loader = DataLoader(TensorDataset(plain.val_x, plain.val_y), batch_size=len(plain.val_x))
    clock: dict[str, float] = {}

    class Classifier(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.network, self.criterion = network, nn.CrossEntropyLoss()

        def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
            if "started" not in clock:
                clock["started"] = time.perf_counter()
            return self.criterion(self.network(batch[0]), batch[1])

        def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
            self.log("val_accuracy", (self.network(batch[0]).argmax(1) == batch[1]).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return config_optimizer(config, self.parameters())

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = lightning.Trainer(
            max_epochs=config.train.epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=tmp,
        )
        trainer.fit(Classifier(), plain.loader, val_loader)
        ended = time.perf_counter()
    return plain.samples * config.train.epochs / (ended - clock["started"])


def torchport_single(config: Config) -> float:
    """``torchport train`` in this process; its samples/s counts from the first step to the last checkpoint on disk."""
    return float(train_summary(config)["samples_per_second"])


def torchport_ddp(overrides: list[str], processes: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "torchport.cli", "train", str(CONFIG), "--run-dir", str(run_dir)]
        command += ["--nproc-per-node", str(processes), *overrides]
        subprocess.run(command, check=True, capture_output=True, timeout=600)
        return float(json.loads((run_dir / "summary.json").read_text())["samples_per_second"])


def _paired(results: dict[str, list[float]]) -> str:
    """Each repeat's ratio to its own hand-loop run, the median over repeats: the machine's speed drifts by tens of
    percent between repeats, which a best-of-N ratio takes whole from whichever row had the luckiest run."""
    pairs = [("torchport", "hand"), ("checkpoints", "hand_saving"), ("lightning", "hand")]
    shown = []
    for row, partner in pairs:
        ratios = [a / b for a, b in zip(results[row], results[partner], strict=False)]
        if ratios:
            shown.append(f"{row} / {partner} {statistics.median(ratios):.3f}")
    return ", ".join(shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs each (less noise from other load)")
    args = parser.parse_args()
    common = [f"train.epochs={args.epochs}", "train.threads=1"]
    overrides = [*common, "train.checkpoint_every_steps=null"]  # the hand loop writes no checkpoints either
    config = load_config(CONFIG, overrides)
    checkpointing = load_config(CONFIG, common)  # examples/digits.yaml's own checkpoint_every_steps
    torch.set_num_threads(1)

    every = checkpointing.train.checkpoint_every_steps
    names = ("hand", "hand_saving", "torchport", "checkpoints", "ddp", "lightning")
    results: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved, so a burst of background load hits every contender alike
        results["hand"].append(hand_loop(config))
        results["hand_saving"].append(hand_loop(config, every))
        if (lightning := lightning_trainer(config)) is not None:
            results["lightning"].append(lightning)
        results["torchport"].append(torchport_single(config))
        results["checkpoints"].append(torchport_single(checkpointing))
    for _ in range(max(1, args.repeats - 1)):
        results["ddp"].append(torchport_ddp(overrides, 2))
    best = {name: max(values) for name, values in results.items() if values}

    console = Console()
    console.print(
        f"digits CNN, batch {config.data.batch_size} per process, {args.epochs} epochs, 1 thread per process, "
        f"best of {args.repeats}"
    )
    console.print(f"{'loop':<56}{'samples/s':>10}{'vs hand':>9}")
    rows = [
        ("hand-written PyTorch loop", "hand"),
        (f"hand loop + torch.save every {every} steps and epoch", "hand_saving"),
        ("torchport train (1 process)", "torchport"),
        (f"torchport train (checkpoint every {every} steps)", "checkpoints"),
        ("torchport train DDP (2 processes)", "ddp"),
        ("Lightning Trainer (checkpoint each epoch)", "lightning"),
    ]
    for label, key in rows:
        if key not in best:
            console.print(f"{label:<56}  skipped: not installed")
            continue
        console.print(f"{label:<56}{best[key]:>10.0f}{best[key] / best['hand']:>9.3f}")
    console.print(f"DDP speed-up over torchport in 1 process: {best['ddp'] / best['torchport']:.2f}x")
    console.print(f"torchport loop overhead vs hand loop: {(1 - best['torchport'] / best['hand']) * 100:+.1f}%")
    console.print(f"cost of the step checkpoints: {(1 - best['checkpoints'] / best['torchport']) * 100:+.1f}%")
    console.print(
        f"with checkpoints on both sides, torchport vs hand loop: {best['checkpoints'] / best['hand_saving']:.3f}"
    )
    console.print(f"median of the {args.repeats} paired ratios (a repeat's rows run back to back): " + _paired(results))
    console.print("all runs (samples/s): " + json.dumps({k: [round(v) for v in vs] for k, vs in results.items()}))


if __name__ == "__main__":
    main()
