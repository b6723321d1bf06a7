"""The training loader with and without ``data.augment``: samples per second side by side, and the ratio.

Draws ``--samples`` random 32x32 RGB images (0..255, like an image folder), then times whole epochs of
``torchport.data.loaders.batch_loader`` as the training loop uses it: raw batches, then each augmentation alone,
then all of them together. Augmentation runs per sample in Python (each draws from its own seeded generator, so
a resumed run sees the same pixels); this shows what that costs next to the plain in-memory batches.

    .venv/bin/python benchmarks/train_data.py
    .venv/bin/python benchmarks/train_data.py --samples 4096 --batch-size 128 --workers 2
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from torchport.data.augment import build_augment
from torchport.data.loaders import batch_loader
from torchport.data.splits import Split
from torchport.train.sampling import EpochBatchSampler

AUGMENTS: dict[str, list[Any]] = {
    "random_crop": [{"random_crop": {"size": 32, "padding": 4}}],
    "horizontal_flip": [{"horizontal_flip": {"p": 0.5}}],
    "color_jitter": [{"color_jitter": {"brightness": 0.2, "contrast": 0.2}}],
}
AUGMENTS["all three"] = [entry for entries in list(AUGMENTS.values()) for entry in entries]


def samples_per_second(split: Split, augment: list[Any] | None, batch_size: int, workers: int, epochs: int) -> float:
    sampler = EpochBatchSampler(len(split), batch_size, seed=0)
    loader = batch_loader(split, sampler, workers, 0, build_augment(augment or [], seed=0))
    started = time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for _ in loader:
            pass
    return epochs * len(split) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.samples, 3, 32, 32)).astype(np.float32)
    split = Split(x, rng.integers(0, 10, size=args.samples).astype(np.int64))

    raw = samples_per_second(split, None, args.batch_size, args.workers, args.epochs)
    print(f"{'loader':<18}{'samples/s':>12}{'x raw':>8}")
    print(f"{'raw':<18}{raw:>12,.0f}{1.0:>8.2f}")
    for name, augment in AUGMENTS.items():
        rate = samples_per_second(split, augment, args.batch_size, args.workers, args.epochs)
        print(f"{name:<18}{rate:>12,.0f}{rate / raw:>8.3f}")


if __name__ == "__main__":
    main()
