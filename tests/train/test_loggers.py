"""train.loggers: TensorBoard event files and an MLflow run, read back with the libraries' own readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from torchport.config import Config
from torchport.pipeline import export_stage
from torchport.train.loggers import flatten, log_bundle
from torchport.train.loop import train

LAYERS = ["flatten", {"linear": {"out_features": 16}}, "relu", {"linear": {"out_features": "classes"}}]


def logged_config(loggers: list[str], epochs: int = 2) -> Config:
    return Config.from_dict(
        {
            "name": "logged",
            "seed": 4,
            "data": {"source": "digits", "batch_size": 64, "split": {"val": 0.2, "test": 0.2}},
            "model": {"layers": LAYERS},
            "train": {"epochs": epochs, "threads": 1, "loggers": loggers},
            "export": {"aoti": False},
        }
    )


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def test_tensorboard_event_files_hold_every_epochs_metrics_and_the_test_metrics(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    summary = train(logged_config(["tensorboard"]), run_dir)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for record in records(run_dir):
        for name in ("train_loss", "val_loss", "val_accuracy"):
            assert name in scalars
            (logged,) = [e for e in events.Scalars(name) if e.step == record["epoch"]]
            assert logged.value == pytest.approx(record[name], rel=1e-6)
    (test,) = events.Scalars("test_accuracy")
    assert test.step == 2 and test.value == pytest.approx(summary["test"]["test_accuracy"], rel=1e-6)
    assert "config/text_summary" in events.Tags()["tensors"]  # add_text is stored as a text tensor summary


def test_mlflow_run_has_params_metrics_per_epoch_and_the_bundle(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    config = logged_config(["mlflow", "tensorboard"])
    summary = train(config, run_dir)
    known = json.loads((run_dir / "mlflow.json").read_text())
    assert known["tracking_uri"].startswith("sqlite:///")
    client = MlflowClient(tracking_uri=known["tracking_uri"])
    run = client.get_run(known["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "logged"
    assert run.data.params["train.epochs"] == "2" and run.data.params["data.split.test"] == "0.2"
    assert run.data.params == flatten(config.model_dump(mode="json"))
    history = client.get_metric_history(known["run_id"], "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["val_accuracy"]) for r in records(run_dir)]
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["test"]["test_accuracy"])

    assert not log_bundle(run_dir)  # no bundle yet
    export_stage(run_dir, Console(quiet=True))
    assert log_bundle(run_dir)
    listed = {a.path for a in client.list_artifacts(known["run_id"], "bundle")}
    assert "bundle/manifest.json" in listed and "bundle/model.onnx" in listed
    local = Path(client.download_artifacts(known["run_id"], "bundle/manifest.json", str(tmp_path)))
    assert local.read_bytes() == (run_dir / "bundle" / "manifest.json").read_bytes()


def test_a_resumed_run_logs_to_the_same_mlflow_run_and_keeps_tensorboard_epochs_single(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train(logged_config(["mlflow", "tensorboard"], epochs=2), run_dir)
    first = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    # Damage the last epoch's checkpoint (last.pt is the same file): the resume falls back to the end of epoch
    # 1 and trains epoch 2 again.
    newest = max((run_dir / "checkpoints").glob("ckpt-*.pt"))
    newest.write_bytes(newest.read_bytes()[:1000])
    summary = train(logged_config(["mlflow", "tensorboard"], epochs=2), run_dir, resume=True)
    assert [r["epoch"] for r in records(run_dir)] == [0, 1]
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == first
    client = MlflowClient(tracking_uri=json.loads((run_dir / "mlflow.json").read_text())["tracking_uri"])
    assert len(client.search_runs([client.get_experiment_by_name("torchport").experiment_id])) == 1
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_accuracy")] == [0, 1]  # epoch 2's first events were purged
    assert [e.value for e in events.Scalars("val_accuracy")] == pytest.approx(
        [r["val_accuracy"] for r in records(run_dir)]
    )
    assert [e.step for e in events.Scalars("test_accuracy")] == [2]
    history = client.get_metric_history(first, "val_accuracy")
    assert [m.step for m in history] == [0, 1, 1]  # MLflow keeps each logged value: epoch 2 was trained twice
    assert client.get_run(first).data.metrics["test_accuracy"] == pytest.approx(summary["test"]["test_accuracy"])
