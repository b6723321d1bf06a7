"""train.precision, train.accumulate_steps and train.early_stopping, each checked by what training produces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from torchport.config import Config
from torchport.errors import ConfigError
from torchport.report.html import write_report
from torchport.train.checkpoint import load_checkpoint
from torchport.train.loop import train

LAYERS = ["flatten", {"linear": {"out_features": 16}}, "relu", {"linear": {"out_features": "classes"}}]


def raw_config(batch_size: int = 64, **train_keys: Any) -> dict[str, Any]:
    return {
        "name": "features",
        "seed": 2,
        "data": {"source": "digits", "batch_size": batch_size},
        "model": {"layers": LAYERS},
        "train": {"epochs": 2, "threads": 1, "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9}, **train_keys},
        "export": {"aoti": False},
    }


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]  # type: ignore[no-any-return]


def epochs_recorded(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def test_bf16_autocast_on_cpu_trains_fp32_weights_that_differ_from_fp32(tmp_path: Path) -> None:
    fp32 = train(Config.from_dict(raw_config()), tmp_path / "fp32")
    bf16 = train(Config.from_dict(raw_config(precision="bf16")), tmp_path / "bf16")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert bf16["final"]["val_accuracy"] > 0.5
    reference, mixed = weights(tmp_path / "fp32"), weights(tmp_path / "bf16")
    assert all(tensor.dtype == torch.float32 for tensor in mixed.values())  # the master weights stay fp32
    # The forward ran in bf16: same seed, same batches, different arithmetic, so different weights.
    assert any(not torch.equal(reference[name], mixed[name]) for name in reference)


def test_fp16_on_cpu_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "fp16.yaml"
    config.write_text(yaml.safe_dump(raw_config(precision="fp16", device="cpu")))
    command = [sys.executable, "-m", "torchport.cli", "train", str(config), "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.precision" in lines[0] and "fp16" in lines[0]


def test_accumulating_two_half_batches_matches_one_whole_batch(tmp_path: Path) -> None:
    # 1437 training samples: batches of 64 and pairs of 32 cover the same samples per optimizer step (the last
    # step is the same 29 samples in both), so the weights agree up to float rounding, and the step count counts
    # batches.
    whole = train(Config.from_dict(raw_config(64)), tmp_path / "whole")
    halves = train(Config.from_dict(raw_config(32, accumulate_steps=2)), tmp_path / "halves")
    assert halves["accumulate_steps"] == 2 and halves["steps"] == 2 * 45 and whole["steps"] == 2 * 23
    expected, actual = weights(tmp_path / "whole"), weights(tmp_path / "halves")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5)
    single = train(Config.from_dict(raw_config(32)), tmp_path / "single")
    assert any(
        not torch.allclose(single_w, weights(tmp_path / "halves")[n])
        for n, single_w in weights(tmp_path / "single").items()
    )
    assert single["steps"] == halves["steps"]


def test_mid_epoch_checkpoints_fall_on_optimizer_steps(tmp_path: Path) -> None:
    train(Config.from_dict(raw_config(32, accumulate_steps=3, checkpoint_every_steps=4, epochs=1)), tmp_path / "run")
    steps = sorted(int(path.stem.split("-")[1]) for path in (tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))
    # Optimizer steps come after batches 3, 6, 9, ...; 45 batches an epoch, the epoch's end is step 45.
    assert steps and all(step % 3 == 0 or step == 45 for step in steps)


def test_early_stopping_stops_records_why_and_stays_stopped_on_resume(tmp_path: Path) -> None:
    # No val_accuracy can improve by more than 1.0: the first epoch sets the mark, the next two do not beat it.
    stopping = {"patience": 2, "min_delta": 1.0}
    config = Config.from_dict(raw_config(epochs=10, early_stopping=stopping))
    summary = train(config, tmp_path / "run")
    assert summary["epochs_run"] == 3 and len(epochs_recorded(tmp_path / "run")) == 3
    assert summary["early_stopping"] == {
        "metric": "val_accuracy",
        "mode": "max",
        "patience": 2,
        "min_delta": 1.0,
        "best_value": epochs_recorded(tmp_path / "run")[0]["val_accuracy"],
        "stopped": True,
        "stopped_epoch": 2,
    }
    page = write_report(tmp_path / "run").read_text()
    assert "stopped early after epoch 3: val_accuracy did not improve for 2 epoch(s)" in page
    # The counters travel in the checkpoint: a resumed run knows it has stopped and trains no further.
    again = train(config, tmp_path / "run", resume=True)
    assert again["epochs_run"] == 3 and again["early_stopping"]["stopped_epoch"] == 2
    assert len(epochs_recorded(tmp_path / "run")) == 3


def test_early_stopping_on_a_loss_minimises_and_runs_to_the_end_while_it_improves(tmp_path: Path) -> None:
    config = Config.from_dict(raw_config(epochs=3, early_stopping={"metric": "train_loss", "patience": 1}))
    summary = train(config, tmp_path / "run")
    assert summary["early_stopping"]["mode"] == "min"
    assert summary["early_stopping"]["stopped"] is False and summary["epochs_run"] == 3


def test_early_stopping_on_an_unrecorded_metric_names_the_key(tmp_path: Path) -> None:
    config = Config.from_dict(raw_config(early_stopping={"metric": "val_rmse"}))
    with pytest.raises(ConfigError, match=r"^train\.early_stopping\.metric: 'val_rmse'"):
        train(config, tmp_path / "run")


def test_an_unknown_logger_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw_config(loggers=["tensorboard", "wandb"])))
    command = [sys.executable, "-m", "torchport.cli", "train", str(config), "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.loggers[1]" in lines[0] and "wandb" in lines[0]


def test_new_keys_at_their_defaults_keep_the_config_hash() -> None:
    plain = Config.from_dict(raw_config())
    defaults = Config.from_dict(raw_config(precision="fp32", accumulate_steps=1, loggers=["mlflow"]))
    assert plain.hash() == defaults.hash()
    assert Config.from_dict(raw_config(accumulate_steps=2)).hash() != plain.hash()
