"""MLflow ``python_function`` loader for an ONNX model handed over by ``torchport package --to mlflow``.

This file travels inside the MLflow model (``code/``) and is imported there as the top-level module
``torchport_onnx_pyfunc``: loading the model needs mlflow, onnxruntime and numpy, never torchport. It imports
nothing of torchport for that reason. The preprocessing is inside the ONNX graph, so ``predict`` feeds raw inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

#: the file beside the ONNX model that names its tensors (written from the bundle's manifest)
CONTRACT = "contract.json"


class OnnxPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict`` takes arrays, returns ``{output name: array}``."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        contract = json.loads((folder / CONTRACT).read_text())
        self.inputs: list[dict[str, Any]] = contract["inputs"]
        self.output_names = [spec["name"] for spec in contract["outputs"]]
        self.labels: list[str] = contract.get("labels", [])
        self.session = ort.InferenceSession(str(folder / contract["model"]), providers=["CPUExecutionProvider"])

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, self._feed(model_input))
        return dict(zip(self.output_names, results, strict=True))

    def _feed(self, model_input: Any) -> dict[str, np.ndarray]:
        """An array (one-input models), a dict by input name, or a DataFrame with one flat sample per row."""
        if isinstance(model_input, dict):
            missing = [spec["name"] for spec in self.inputs if spec["name"] not in model_input]
            if missing:
                raise ValueError(f"input '{missing[0]}' is missing (the model takes {self._names()})")
            return {spec["name"]: self._array(spec, model_input[spec["name"]]) for spec in self.inputs}
        if len(self.inputs) != 1:
            raise ValueError(f"the model takes {len(self.inputs)} inputs ({self._names()}): pass a dict by name")
        spec = self.inputs[0]
        values = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
        return {spec["name"]: self._array(spec, values)}

    def _names(self) -> str:
        return ", ".join(spec["name"] for spec in self.inputs)

    @staticmethod
    def _array(spec: dict[str, Any], values: Any) -> np.ndarray:
        """``values`` in the input's dtype and shape; rows of flattened samples are reshaped to it."""
        array = np.asarray(values, dtype=spec["dtype"])
        batched = spec["shape"][:1] == ["batch"]
        sample = [int(dim) for dim in spec["shape"][1:]] if batched else [int(dim) for dim in spec["shape"]]
        if batched and array.ndim == 2 and list(array.shape[1:]) != sample and array.shape[1] == np.prod(sample):
            array = array.reshape([len(array), *sample])
        if list(array.shape[1:] if batched else array.shape) != sample:
            raise ValueError(f"input '{spec['name']}': expected shape {spec['shape']}, got {list(array.shape)}")
        return array


def _load_pyfunc(data_path: str) -> OnnxPyfunc:
    """MLflow's entry point for a ``loader_module``: ``data_path`` is the model's ``data`` folder."""
    return OnnxPyfunc(Path(data_path))
