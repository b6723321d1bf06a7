"""An image folder decoded per batch by DataLoader workers: it trains, resumes bitwise after SIGKILL (one process
and DDP), and exports with parity. The sampler in the main process owns the order; workers only decode."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from torchport.pipeline import export_stage
from torchport.verify.bundle import verify_bundle

from .procs import cleanup, sigkill_after_first_checkpoint, start, wait_ok, weights, worker_with_rank
from .test_resume import _train, resume_and_compare


def _draw_folder(root: Path, per_class: int = 24) -> Path:
    """Two classes told apart by where the bright square lies; noisy, so no two images are alike."""
    rng = np.random.default_rng(0)
    for label, corner in (("left", 0), ("right", 6)):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 90, size=(12, 12, 3), dtype=np.uint8)
            pixels[3:9, corner : corner + 6] = 230
            Image.fromarray(pixels, "RGB").save(root / label / f"{index:02d}.png")
    return root


def _config(tmp_path: Path, workers: int, batch_size: int) -> Path:
    raw: dict[str, Any] = {
        "name": "folder",
        "seed": 5,
        "data": {
            "source": "image_folder",
            "path": str(_draw_folder(tmp_path / "images")),
            "in_memory": False,
            "num_workers": workers,
            "batch_size": batch_size,
            "stats_samples": 20,
            "augment": [{"horizontal_flip": {"p": 0.5}}],
        },
        "model": {
            "layers": [
                {"conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1}},
                "relu",
                "flatten",
                {"dropout": {"p": 0.2}},
                {"linear": {"out_features": "classes"}},
            ]
        },
        "train": {"epochs": 2, "optimizer": {"name": "AdamW", "lr": 0.01}, "checkpoint_every_steps": 2, "threads": 1},
        "export": {"aoti": False},
    }
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_workers_decoding_images_resume_bitwise_after_sigkill_and_export_with_parity(tmp_path: Path) -> None:
    config = _config(tmp_path, workers=2, batch_size=2)
    reference = _train(config, tmp_path / "reference")
    victim = _train(config, tmp_path / "victim")
    sigkill_after_first_checkpoint(victim, tmp_path / "victim" / "checkpoints")
    resume_and_compare(config, tmp_path, reference)

    bundle = export_stage(tmp_path / "reference")
    normalization = bundle.manifest.preprocessing.normalization
    assert normalization["from_samples"] == 20, "the statistics' sample size is in the manifest"
    _, results = verify_bundle(bundle.root)
    assert results and all(result.passed for result in results), [r.model_dump() for r in results]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_with_workers_decoding_images_restarts_after_sigkill_and_ends_bitwise_equal(tmp_path: Path) -> None:
    config = str(_config(tmp_path, workers=1, batch_size=2))
    ddp = ["--nproc-per-node", "2", "--max-restarts", "2"]
    reference = start(["train", config, "--run-dir", str(tmp_path / "reference"), *ddp], tmp_path / "ref.log")
    victim = start(["train", config, "--run-dir", str(tmp_path / "victim"), *ddp], tmp_path / "victim.log")
    with cleanup(reference, victim):
        writer = worker_with_rank(victim.pid, rank=0)
        last = tmp_path / "victim" / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 150
        while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(writer, signal.SIGKILL)
        victim_log = wait_ok(victim, tmp_path / "victim.log", 240)
        wait_ok(reference, tmp_path / "ref.log", 240)
    resumed = re.search(r"resumed from \S+ at epoch (\d+), step (\d+)", victim_log)
    assert resumed and int(resumed.group(2)) > 0, f"the restarted group did not resume mid-epoch:\n{victim_log[-3000:]}"
    final = "checkpoints/last.pt"
    expected, actual = weights(tmp_path / "reference" / final), weights(tmp_path / "victim" / final)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after the restart"
    summary = json.loads((tmp_path / "victim" / "summary.json").read_text())
    assert summary["world_size"] == 2
