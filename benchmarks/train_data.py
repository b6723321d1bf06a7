"""Training data benchmarks (issue #18): each section prints its table, figures measured side by side in one run.

  images     20,000 generated 64x64 PNGs (10 class folders) read per batch by 2 DataLoader workers: a hand-written
             loop (a Dataset that PIL-decodes one file per sample, shuffle, AdamW) vs ``torchport train`` with
             ``data.in_memory: false``; same model, batch 64, optimizer, workers, 1 torch thread, CPU, 1 epoch,
             best of 2 interleaved. Prints samples/s of both and torchport/hand (target >= 0.95).
  parquet    a generated 2.26 GB Parquet file (2,200,000 rows x 256 float32 + label, row groups of 65,536) trained
             for one epoch by ``torchport train`` in a child process (``data.in_memory: auto`` reads it on demand),
             first building the feature cache (``data.cache_dir`` under the workdir, deleted after), then reusing
             it. Prints wall and train seconds, samples/s, peak RSS (GNU time, exact; and the process tree sampled
             from /proc, split by phase) against the 1 GB target, and the floor under it: the peak of the imports
             alone, and with the first torch.optim optimizer (which imports torch._dynamo).
  precision  ``train.precision`` bf16 vs fp32 samples/s on the CPU for examples/digits.yaml (6 epochs) and
             examples/images_resnet.yaml (2 epochs, on the committed examples/data/shapes/), best of 2; also says
             whether the CPU has native bf16 (without AVX512_BF16 or AMX, bf16 is emulated and slower).
  augment    the training loader with and without each ``data.augment`` transform, samples/s and x raw.

Generated data goes to ``--workdir`` (kept, and reused by the next run with the same sizes) or to a temporary folder
under $TMPDIR (deleted at the end, also after a failure). The full-size figures, one section per command (run them
on an otherwise idle machine; the times were measured on 2 cores of an AMD EPYC, and a slower machine takes
several times as long):

    .venv/bin/python benchmarks/train_data.py --section images     # 2 min, ~250 MB of PNGs
    .venv/bin/python benchmarks/train_data.py --section parquet    # 2 min, 4.5 GB on disk (table + cache)
    .venv/bin/python benchmarks/train_data.py --section precision  # 20 s
    .venv/bin/python benchmarks/train_data.py --section augment    # seconds

``--section all`` runs the four in turn (about 4 min there). Add ``--workdir DIR`` to keep the PNGs and the table for
another run. ``--quick`` runs every section at small sizes (2,000 PNGs, 50,000 rows with ``in_memory: false``
forced, fewer epochs, one repeat) in about two minutes: it checks the script, its figures are not the issue's.
Sizes and counts are options (``--help``); an option given with ``--quick`` wins over its small default.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from train_data_common import workdir
from train_data_images import images_section
from train_data_parquet import parquet_section
from train_data_precision import precision_section

from torchport.data.augment import build_augment
from torchport.data.loaders import batch_loader
from torchport.data.splits import Split
from torchport.train.sampling import EpochBatchSampler

SECTIONS = ("images", "parquet", "precision", "augment")
QUICK = {"images": 2_000, "parquet_rows": 50_000, "digits_epochs": 2, "resnet_epochs": 1, "samples": 512, "repeats": 1}

# --- augment: the training loader with and without data.augment -------------------------------------------
# Random 32x32 RGB images (0..255, like an image folder), whole epochs of the loader as the training loop uses it:
# raw batches, each augmentation alone, then all of them. Augmentation runs per sample in Python (each draws from
# its own seeded generator, so a resumed run sees the same pixels); this shows what that costs.

AUGMENTS: dict[str, list[Any]] = {
    "random_crop": [{"random_crop": {"size": 32, "padding": 4}}],
    "horizontal_flip": [{"horizontal_flip": {"p": 0.5}}],
    "color_jitter": [{"color_jitter": {"brightness": 0.2, "contrast": 0.2}}],
}
AUGMENTS["all three"] = [entry for entries in list(AUGMENTS.values()) for entry in entries]


def augmented_rate(split: Split, augment: list[Any] | None, batch_size: int, workers: int, epochs: int) -> float:
    sampler = EpochBatchSampler(len(split), batch_size, seed=0)
    loader = batch_loader(split, sampler, workers, 0, build_augment(augment or [], seed=0))
    started = time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for _ in loader:
            pass
    return epochs * len(split) / (time.perf_counter() - started)


def augment_section(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.samples, 3, 32, 32)).astype(np.float32)
    split = Split(x, rng.integers(0, 10, size=args.samples).astype(np.int64))
    workers = args.augment_workers
    print(f"\n== augment: {args.samples:,} 32x32 RGB samples, batch {args.batch_size}, {workers} workers, ", end="")
    print(f"{args.augment_epochs} epochs")
    raw = augmented_rate(split, None, args.batch_size, workers, args.augment_epochs)
    print(f"{'loader':<18}{'samples/s':>12}{'x raw':>8}")
    print(f"{'raw':<18}{raw:>12,.0f}{1.0:>8.2f}")
    for name, augment in AUGMENTS.items():
        rate = augmented_rate(split, augment, args.batch_size, workers, args.augment_epochs)
        print(f"{name:<18}{rate:>12,.0f}{rate / raw:>8.3f}")


# --- command line ---------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--section", choices=[*SECTIONS, "all"], default="all")
    add("--quick", action="store_true", help="small sizes, one repeat (options given still win): checks the script")
    add("--workdir", type=Path, help="where generated data goes and is reused (default: a temporary folder)")
    add("--repeats", type=int, default=2, help="best of N interleaved runs (images, precision)")
    add("--threads", type=int, default=1, help="torch threads of the training process (images, parquet)")
    add("--workers", type=int, default=2, help="DataLoader workers (images)")
    add("--batch-size", type=int, default=64, help="batch size (images, augment)")
    add("--images", type=int, default=20_000, help="PNGs to draw (images)")
    add("--image-epochs", type=int, default=1)
    add("--parquet-rows", type=int, default=2_200_000, help="rows x 256 float32 + label (2,200,000: 2.26 GB)")
    add("--parquet-batch", type=int, default=1024)
    add("--parquet-workers", type=int, default=0, help="DataLoader workers (parquet)")
    add("--precision-threads", type=int, default=0, help="torch threads (precision; default: all cores)")
    add("--digits-epochs", type=int, default=6)
    add("--resnet-epochs", type=int, default=2)
    add("--samples", type=int, default=2048, help="random images (augment)")
    add("--augment-workers", type=int, default=0, help="DataLoader workers (augment)")
    add("--augment-epochs", type=int, default=2)
    if parser.parse_args(argv).quick:  # small defaults; an option given on the command line still wins
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    chosen = SECTIONS if args.section == "all" else (args.section,)
    work, temporary = workdir(args.workdir)
    started = time.perf_counter()
    try:
        if "images" in chosen:
            images_section(args, work)
        if "parquet" in chosen:
            parquet_section(args, work)
        if "precision" in chosen:
            precision_section(args)
        if "augment" in chosen:
            augment_section(args)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    kept = "deleted" if temporary else "kept"
    print(f"\n({', '.join(chosen)} in {time.perf_counter() - started:.0f} s; workdir {work}, {kept})")


if __name__ == "__main__":
    main()
