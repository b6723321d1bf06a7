"""An MLflow model directory from a bundle: ``MLmodel`` with the manifest's tensor signature and a golden input
example, and a ``python_function`` flavour that runs the ONNX model in ONNX Runtime.

The flavour's loader is ``torchport_onnx_pyfunc.py``, shipped in the model's ``code/`` folder (a ``loader_module``,
not a pickled class): loading needs mlflow, onnxruntime and numpy, not torchport. MLflow itself writes the folder
(``mlflow.pyfunc.save_model``), so its layout is the one the installed MLflow reads.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torchport.bundle.manifest import Bundle, Manifest, TensorSpec
from torchport.errors import UsageError
from torchport.package import torchport_onnx_pyfunc
from torchport.package.common import PackageOptions, base_onnx, copy_verified, variant_onnx
from torchport.package.readmes import mlflow_readme


def _mlflow() -> Any:
    try:
        import mlflow.pyfunc
    except ImportError:
        raise UsageError("--to mlflow needs MLflow: pip install 'torchport[package]' (or mlflow)") from None
    return mlflow


def _tensor_spec(spec: TensorSpec) -> Any:
    import numpy as np
    from mlflow.types import TensorSpec as MlflowTensorSpec

    shape = tuple(-1 if dim == "batch" else int(dim) for dim in spec.shape)
    return MlflowTensorSpec(np.dtype(spec.dtype), shape, spec.name)


def signature(manifest: Manifest) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema

    return ModelSignature(
        inputs=Schema([_tensor_spec(s) for s in manifest.inputs]),
        outputs=Schema([_tensor_spec(s) for s in manifest.outputs]),
    )


def _contract(manifest: Manifest, model_file: str) -> dict[str, Any]:
    """What the loader needs from the manifest: the tensors and the labels."""
    return {
        "name": manifest.name,
        "task": manifest.task,
        "model": model_file,
        "inputs": [spec.model_dump() for spec in manifest.inputs],
        "outputs": [spec.model_dump() for spec in manifest.outputs],
        "labels": manifest.labels,
    }


def _requirements() -> list[str]:
    """Pinned as installed here, where the model was just checked; MLflow adds itself."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("onnxruntime", "numpy")]


def _input_example(bundle: Bundle) -> Any:
    """The first golden sample: one input as an array, several as a dict by name."""
    arrays = {t.name: bundle.read_tensor(t)[:1] for t in bundle.manifest.golden.inputs}
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def write_mlflow(bundle: Bundle, out: Path, options: PackageOptions) -> None:
    mlflow = _mlflow()
    handed = variant_onnx(bundle, options.variant) if options.variant else base_onnx(bundle)
    out.rmdir()  # MLflow writes the folder itself and refuses one that exists
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "model"
        copy_verified(bundle, handed.artifact, data / "model.onnx")
        (data / torchport_onnx_pyfunc.CONTRACT).write_text(json.dumps(_contract(bundle.manifest, "model.onnx")))
        loader = Path(scratch) / "torchport_onnx_pyfunc.py"
        shutil.copyfile(torchport_onnx_pyfunc.__file__, loader)
        mlflow.pyfunc.save_model(
            path=str(out),
            loader_module="torchport_onnx_pyfunc",
            data_path=str(data),
            code_paths=[str(loader)],
            signature=signature(bundle.manifest),
            input_example=_input_example(bundle),
            pip_requirements=_requirements(),
            metadata={"torchport_model": bundle.manifest.name, "torchport_variant": handed.variant},
        )
    (out / "README.md").write_text(mlflow_readme(bundle.manifest, handed.variant))
