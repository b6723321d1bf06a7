"""Write ``RUN_DIR/bundle/``: the exported artifacts, golden tensors and the manifest that describes them."""

from __future__ import annotations

import datetime as dt
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from torchport.bundle.manifest import (
    Artifact,
    Bundle,
    Golden,
    Manifest,
    Preprocessing,
    Provenance,
    TableColumn,
    TensorSpec,
    file_entry,
    write_tensor,
)
from torchport.export.deployable import TrainedRun
from torchport.sessions import torch_predictor


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def provenance(run: TrainedRun) -> Provenance:
    return Provenance(
        torchport=_version("torchport") or "unknown",
        torch=_version("torch") or "unknown",
        onnx=_version("onnx"),
        onnxruntime=_version("onnxruntime"),
        python=platform.python_version(),
        config_hash=run.config.hash(),
        config_name=run.config.name,
        git_commit=git_commit(Path.cwd()),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        checkpoint=run.checkpoint_path.stem,
        data_source=run.meta.source,
    )


def fresh_bundle_dir(run_dir: Path) -> Path:
    """An empty ``RUN_DIR/bundle``: stale artifacts of an earlier export must not linger beside new ones."""
    bundle_dir = run_dir / "bundle"
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    return bundle_dir


def tensor_specs(run: TrainedRun) -> tuple[list[TensorSpec], list[TensorSpec]]:
    shape: list[Any] = ["batch", *run.meta.input_shape]
    inputs = [TensorSpec(name=run.config.export.input_name, dtype=run.meta.input_dtype, shape=shape)]
    outputs = [
        TensorSpec(name=name, dtype="float32", shape=["batch", run.meta.num_outputs]) for name in run.output_names
    ]
    return inputs, outputs


def write_golden(bundle_dir: Path, run: TrainedRun, samples: np.ndarray) -> Golden:
    """Golden inputs (validation samples) and the PyTorch reference outputs for them, as raw files."""
    reference = torch_predictor(run.module, run.output_names)(samples)
    input_name = run.config.export.input_name
    inputs = [write_tensor(bundle_dir, f"golden/{input_name}.bin", input_name, samples)]
    outputs = [write_tensor(bundle_dir, f"golden/{name}.bin", name, reference[name]) for name in run.output_names]
    return Golden(samples=len(samples), inputs=inputs, outputs=outputs)


def artifact_entry(bundle_dir: Path, path: Path, kind: str, runtime: str, opset: int | None = None) -> Artifact:
    return Artifact(kind=kind, runtime=runtime, opset=opset, **file_entry(bundle_dir, path))


def preprocessing(run: TrainedRun) -> Preprocessing:
    mean, std = run.meta.input_mean, run.meta.input_std
    return Preprocessing(
        normalization={
            "kind": "standardize",
            "mean": mean.flatten().tolist(),
            "std": std.flatten().tolist(),
            "broadcast_shape": list(mean.shape),
            **({"from_samples": run.meta.stats_samples} if run.meta.stats_samples else {}),
        },
        input_range=[run.meta.input_min, run.meta.input_max],
        feature_names=list(run.meta.feature_names),
        columns=[TableColumn(**column.to_dict()) for column in run.meta.columns],
        description=_description(bool(run.meta.columns)),
    )


def _description(table: bool) -> str:
    raw = "Feed raw inputs exactly as the data source yields them; the graph standardises them itself."
    if not table:
        return raw
    return raw + (
        " Raw table rows become that input by `columns`: a numeric column is one float32 feature, a categorical one "
        "a one-hot block over its categories (matched by text), in column order; torchport.tabular.encode_rows "
        "does exactly this."
    )


def write_manifest(
    bundle_dir: Path,
    run: TrainedRun,
    artifacts: list[Artifact],
    golden: Golden,
    metrics: dict[str, float | None],
) -> Bundle:
    inputs, outputs = tensor_specs(run)
    manifest = Manifest(
        name=run.config.name,
        task=run.meta.task,
        inputs=inputs,
        outputs=outputs,
        labels=list(run.meta.class_names),
        preprocessing=preprocessing(run),
        artifacts=artifacts,
        golden=golden,
        metrics=metrics,
        provenance=provenance(run),
    )
    bundle = Bundle(bundle_dir, manifest)
    bundle.save()
    return bundle
