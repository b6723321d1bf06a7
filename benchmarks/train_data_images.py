"""Section ``images`` of benchmarks/train_data.py: an image folder read per batch by DataLoader workers.

Draws ``n`` 64x64 RGB PNGs into ``root/<class>/`` (10 classes: 5 shapes x warm or cool colours, on a noisy
background so the files do not compress to nothing), then trains the same small CNN for the same epochs with the
same batch, optimizer, thread count and DataLoader workers two ways, interleaved: a hand-written loop (a Dataset
that decodes one PNG with PIL per sample, the default collate, shuffle) and ``torchport train`` with
``data.in_memory: false``. Both clocks start before the first batch is asked for (so both include starting the
workers) and stop after the last epoch's validation (torchport's also after its end-of-epoch checkpoints);
loading, listing the files and the normalisation statistics are outside both. Both train on the CPU.
"""

from __future__ import annotations

import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from train_data_common import train_summary

from torchport.config import Config
from torchport.data import load_data
from torchport.models.compose import build_model
from torchport.models.spec import ModelMeta, model_meta, model_spec

SIZE = 64
SHAPES = ("circle", "square", "triangle", "cross", "ring")
CLASSES = [f"{shape}_{tone}" for shape in SHAPES for tone in ("warm", "cool")]
CNN = [
    {"conv2d": {"out_channels": 16, "kernel_size": 3, "padding": 1}},
    "relu",
    {"maxpool2d": {"kernel_size": 2}},
    {"conv2d": {"out_channels": 32, "kernel_size": 3, "padding": 1}},
    "relu",
    {"maxpool2d": {"kernel_size": 2}},
    {"conv2d": {"out_channels": 64, "kernel_size": 3, "padding": 1}},
    "relu",
    {"adaptive_avgpool2d": {"output_size": 1}},
    "flatten",
    {"linear": {"out_features": "classes"}},
]
LR, WEIGHT_DECAY = 0.002, 0.0001  # AdamW, in both loops


def draw(label: int, index: int, seed: int) -> Image.Image:
    """One image, the same pixels for the same (label, index, seed) whichever process draws it."""
    rng = np.random.default_rng([seed, label, index])
    background = rng.integers(0, 100, size=3)
    pixels = np.clip(background + rng.integers(-30, 31, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    shape, warm = SHAPES[label // 2], label % 2 == 0
    low, high = rng.integers(60, 120), rng.integers(170, 256)
    colour = (int(high), int(low), int(low // 2)) if warm else (int(low // 2), int(low), int(high))
    half = int(rng.integers(10, 24))
    cx, cy = (int(c) for c in rng.integers(half + 2, SIZE - half - 2, size=2))
    box = (cx - half, cy - half, cx + half, cy + half)
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=colour)
    elif shape == "cross":
        pen.rectangle((cx - half, cy - half // 3, cx + half, cy + half // 3), fill=colour)
        pen.rectangle((cx - half // 3, cy - half, cx + half // 3, cy + half), fill=colour)
    else:
        pen.ellipse(box, outline=colour, width=max(3, half // 3))
    return image


def _write_one(job: tuple[str, int, int, int]) -> None:
    root, label, index, seed = job
    draw(label, index, seed).save(Path(root) / CLASSES[label] / f"{index:06d}.png")


def ensure_images(root: Path, count: int, seed: int = 0) -> float:
    """``count`` PNGs under ``root`` (reused when a previous run wrote exactly these); seconds spent drawing."""
    marker = root / f".complete-{count}-{seed}"  # hidden: torchport and the hand loop list class folders only
    if marker.is_file():
        return 0.0
    started = time.perf_counter()
    per_class = -(-count // len(CLASSES))
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), label, index, seed) for label in range(len(CLASSES)) for index in range(per_class)]
    with Pool(2) as pool:
        for _ in pool.imap_unordered(_write_one, jobs, chunksize=256):
            pass
    marker.write_text("")
    return time.perf_counter() - started


def image_config(root: Path, args: Any) -> Config:
    raw = {
        "name": "bench_images",
        "seed": 0,
        "data": {
            "source": "image_folder",
            "path": str(root),
            "in_memory": False,
            "num_workers": args.workers,
            "batch_size": args.batch_size,
            "split": {"val": 0.02, "test": 0.0},
        },
        "model": {"layers": CNN},
        "train": {
            "epochs": args.image_epochs,
            "optimizer": {"name": "AdamW", "lr": LR, "weight_decay": WEIGHT_DECAY},
            "checkpoint_every_steps": None,
            "threads": args.threads,
            "device": "cpu",
        },
    }
    return Config.from_dict(raw, base_dir=root)


class PngFiles(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """What a user writes: one file opened, decoded and converted per sample."""

    def __init__(self, files: list[Path], labels: list[int]) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[index]) as opened:
            pixels = np.asarray(opened.convert("RGB"), dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), self.labels[index]


def hand_split(root: Path, val_count: int) -> tuple[PngFiles, PngFiles]:
    """Train and validation sets over a shuffled listing: ``val_count`` files (as many as torchport holds out)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    files = [(path, label) for label, folder in enumerate(folders) for path in sorted(folder.glob("*.png"))]
    order = np.random.default_rng(0).permutation(len(files))
    val, trained = [files[i] for i in order[:val_count]], [files[i] for i in order[val_count:]]
    return PngFiles(*_columns(trained)), PngFiles(*_columns(val))


def _columns(pairs: list[tuple[Path, int]]) -> tuple[list[Path], list[int]]:
    return [path for path, _ in pairs], [label for _, label in pairs]


def hand_loop(config: Config, meta: ModelMeta, root: Path, val_count: int) -> float:
    """The same model, optimizer and workers, in a loop written by hand; samples/s over all epochs."""
    torch.manual_seed(config.seed)  # the same seed, thread count and deterministic setting torchport uses
    torch.set_num_threads(config.train.threads or torch.get_num_threads())
    torch.use_deterministic_algorithms(config.train.deterministic, warn_only=True)
    model = build_model(model_spec(config, meta))  # torchport's model builder: the very same network and init
    train_set, val_set = hand_split(root, val_count)
    workers = config.data.num_workers
    loader = torch.utils.data.DataLoader(
        train_set, config.data.batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    criterion = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(config.train.epochs):
        model.train()
        for inputs, targets in loader:
            optimizer.zero_grad()
            criterion(model(inputs), targets).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():  # validation in this process, eval_batch_size at a time, as torchport's
            for first in range(0, len(val_set), config.data.eval_batch_size):
                batch = [val_set[i] for i in range(first, min(first + config.data.eval_batch_size, len(val_set)))]
                model(torch.stack([x for x, _ in batch])).argmax(1)
    return len(train_set) * config.train.epochs / (time.perf_counter() - started)


def images_section(args: Any, work: Path) -> None:
    root = work / f"images-{args.images}"
    drawn = ensure_images(root, args.images)
    config = image_config(root, args)
    data = load_data(config.data, config.seed)  # for the model only: the normalisation torchport builds into it
    meta = model_meta(data)
    results: dict[str, list[float]] = {"hand": [], "torchport": []}
    for _ in range(args.repeats):  # interleaved: a burst of other load hits both alike
        results["hand"].append(hand_loop(config, meta, root, len(data.val.x)))
        results["torchport"].append(float(train_summary(config)["samples_per_second"]))
    hand, ours = max(results["hand"]), max(results["torchport"])
    print(f"\n== images: {len(data.train.x) + len(data.val.x):,} {SIZE}x{SIZE} PNGs in {root}", end="")
    print(f" ({f'drawn in {drawn:.0f} s' if drawn else 'reused'})")
    print(
        f"small CNN, batch {config.data.batch_size}, {config.train.epochs} epoch(s) of {len(data.train.x):,} "
        f"samples, {config.data.num_workers} DataLoader workers, {args.threads} torch thread(s), "
        f"best of {args.repeats}"
    )
    print(f"{'loop':<46}{'samples/s':>12}{'vs hand':>10}")
    print(f"{'hand-written loop (PIL per sample)':<46}{hand:>12,.0f}{1.0:>10.3f}")
    print(f"{'torchport train (in_memory: false)':<46}{ours:>12,.0f}{ours / hand:>10.3f}")
    print("all runs (samples/s): " + ", ".join(f"{k} {[round(v) for v in vs]}" for k, vs in results.items()))
