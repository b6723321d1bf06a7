"""ONNX export with the dynamo exporter: dynamic batch, metadata inside, checked by ``onnx.checker``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import torch

from torchport.errors import TorchportError, first_line
from torchport.export.deployable import TrainedRun

TWO_GIB = 2**31


def _parameter_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def onnx_metadata(run: TrainedRun, provenance: dict[str, str]) -> dict[str, str]:
    """String key/values stored in the ONNX file itself, so the model describes itself without the manifest."""
    return {
        "torchport.task": run.meta.task,
        "torchport.labels": json.dumps(list(run.meta.class_names)),
        "torchport.input_range": json.dumps([run.meta.input_min, run.meta.input_max]),
        **{f"torchport.provenance.{key}": str(value) for key, value in provenance.items()},
    }


def export_onnx(run: TrainedRun, path: Path, provenance: dict[str, str]) -> Path:
    """Export ``run`` to ``path``; returns the path. Models over 2 GiB keep their weights as external data."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    # The exporter logs a warning per optional torchvision op it cannot register; that is noise to a user.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            program = torch.onnx.export(
                run.module,
                (run.example_input(),),
                dynamo=True,
                input_names=[run.config.export.input_name],
                output_names=run.output_names,
                dynamic_shapes={"x": {0: batch}},
                opset_version=run.config.export.opset,
                verbose=False,
            )
    except Exception as exc:
        detail = first_line(exc, type(exc).__name__)
        raise TorchportError(f"ONNX export of {run.run_dir} failed: {detail}") from exc
    assert program is not None
    program.model.metadata_props.update(onnx_metadata(run, provenance))
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=_parameter_bytes(run.module) > TWO_GIB)
    check_onnx(path)
    return path


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise TorchportError(f"{path}: onnx.checker rejected the exported model: {str(exc).splitlines()[0]}") from exc
