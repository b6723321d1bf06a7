"""The test split is evaluated once, with the checkpoint export uses; its metrics reach summary, manifest, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from torchport.config import Config
from torchport.data import load_data
from torchport.export.deployable import load_trained_run
from torchport.pipeline import export_stage
from torchport.report.html import write_report
from torchport.train.loop import train


def small_config(test: float, **train: Any) -> Config:
    return Config.from_dict(
        {
            "name": "split",
            "seed": 1,
            "data": {"source": "digits", "batch_size": 64, "split": {"val": 0.2, "test": test}},
            "model": {
                "layers": ["flatten", {"linear": {"out_features": 16}}, "relu", {"linear": {"out_features": "classes"}}]
            },
            "train": {"epochs": 2, "threads": 1, **train},
            "export": {"aoti": False},
        }
    )


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("test_split") / "run"
    train(small_config(0.25), run_dir)
    export_stage(run_dir, Console(quiet=True))
    write_report(run_dir)
    return run_dir


def test_summary_holds_the_exported_checkpoints_test_metrics(tested_run: Path) -> None:
    summary = json.loads((tested_run / "summary.json").read_text())
    assert summary["test_checkpoint"] == "best"
    assert set(summary["test"]) == {"test_loss", "test_accuracy"}
    # Recomputed by hand from the checkpoint export reads, on the split the config carves off.
    run = load_trained_run(tested_run)
    data = load_data(run.config.data, run.config.seed)
    assert len(data.test.x) == summary["samples"]["test"] > 0
    with torch.no_grad():
        outputs = run.module.model.eval()(torch.as_tensor(data.test.x))
    accuracy = float((outputs.argmax(dim=1) == torch.as_tensor(data.test.y)).float().mean())
    assert summary["test"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_manifest_and_report_show_the_same_test_metrics(tested_run: Path) -> None:
    summary = json.loads((tested_run / "summary.json").read_text())
    manifest = json.loads((tested_run / "bundle" / "manifest.json").read_text())
    for name, value in summary["test"].items():
        assert manifest["metrics"][name] == pytest.approx(value, abs=1e-5)
    assert "val_accuracy" in manifest["metrics"]
    page = (tested_run / "report.html").read_text()
    assert "id='test-metrics'" in page
    assert f"test_accuracy {summary['test']['test_accuracy']:.4f}" in page


def test_no_test_split_means_no_test_metrics(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    summary = train(small_config(0.0, epochs=1), run_dir)
    assert summary["test"] == {} and summary["samples"]["test"] == 0
    export_stage(run_dir, Console(quiet=True))
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    assert not [name for name in manifest["metrics"] if name.startswith("test_")]
    assert "test-metrics" not in write_report(run_dir).read_text()


def test_last_checkpoint_is_the_one_tested_when_export_takes_last(tmp_path: Path) -> None:
    config = small_config(0.25, epochs=1)
    config = config.model_copy(update={"export": config.export.model_copy(update={"checkpoint": "last"})})
    summary = train(config, tmp_path / "last")
    assert summary["test_checkpoint"] == "last" and summary["test"]["test_accuracy"] > 0
