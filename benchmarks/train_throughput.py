"""Training throughput, side by side: a minimal hand-written PyTorch loop, `torchport train` in one process,
and `torchport train --nproc-per-node 2` (DDP, gloo, one thread per process).

All three train the same model (the digits CNN of examples/digits.yaml, built once by torchport: a plain
nn.Module) on the same data with the same optimizer, batch size and epochs, and validate once per epoch; the
hand loop is what a user would write without torchport. What differs is the loop: torchport's adds the
progress bar, checkpoints, metrics and the seeded sampler, and that overhead is what the first ratio shows.
Process start-up (imports, data loading) is outside every figure.

    .venv/bin/python benchmarks/train_throughput.py [--epochs 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from torchport.config import Config, load_config
from torchport.data import load_data
from torchport.models.compose import build_model
from torchport.models.spec import model_meta, model_spec
from torchport.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "digits.yaml"


def hand_loop(config: Config) -> float:
    """The loop a user writes by hand: DataLoader, forward, loss, backward, step; validation each epoch."""
    torch.manual_seed(config.seed)
    data = load_data(config.data, config.seed)
    model = build_model(model_spec(config, model_meta(data)))
    x, y = torch.as_tensor(data.train.x), torch.as_tensor(data.train.y)
    val_x, val_y = torch.as_tensor(data.val.x), torch.as_tensor(data.val.y)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=config.data.batch_size, shuffle=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.0001)
    criterion = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(config.train.epochs):
        model.train()
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = criterion(model(inputs), targets)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(val_x).argmax(1) == val_y).float().mean().item()
    del accuracy
    return len(x) * config.train.epochs / (time.perf_counter() - started)


def torchport_single(config: Config) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(config, Path(tmp) / "run", console=Console(quiet=True))
    return float(summary["samples_per_second"])


def torchport_ddp(overrides: list[str], processes: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "torchport.cli", "train", str(CONFIG), "--run-dir", str(run_dir)]
        command += ["--nproc-per-node", str(processes), *overrides]
        subprocess.run(command, check=True, capture_output=True, timeout=600)
        return float(json.loads((run_dir / "summary.json").read_text())["samples_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs each (less noise from other load)")
    args = parser.parse_args()
    overrides = [f"train.epochs={args.epochs}", "train.threads=1", "train.checkpoint_every_steps=null"]
    config = load_config(CONFIG, overrides)
    torch.set_num_threads(1)

    results: dict[str, list[float]] = {"hand": [], "torchport": [], "ddp": []}
    for _ in range(args.repeats):  # interleaved, so a burst of background load hits every contender alike
        results["hand"].append(hand_loop(config))
        results["torchport"].append(torchport_single(config))
    for _ in range(max(1, args.repeats - 1)):
        results["ddp"].append(torchport_ddp(overrides, 2))
    best = {name: max(values) for name, values in results.items()}

    console = Console()
    console.print(
        f"digits CNN, batch {config.data.batch_size} per process, {args.epochs} epochs, 1 thread per process, "
        f"best of {args.repeats}"
    )
    console.print(f"{'loop':<34}{'samples/s':>12}{'vs hand':>10}")
    rows = [
        ("hand-written PyTorch loop", "hand"),
        ("torchport train (1 process)", "torchport"),
        ("torchport train DDP (2 processes)", "ddp"),
    ]
    for label, key in rows:
        console.print(f"{label:<34}{best[key]:>12.0f}{best[key] / best['hand']:>10.3f}")
    console.print(f"DDP speed-up over torchport in 1 process: {best['ddp'] / best['torchport']:.2f}x")
    console.print(f"torchport loop overhead vs hand loop: {(1 - best['torchport'] / best['hand']) * 100:+.1f}%")
    console.print("all runs (samples/s): " + json.dumps({k: [round(v) for v in vs] for k, vs in results.items()}))


if __name__ == "__main__":
    main()
