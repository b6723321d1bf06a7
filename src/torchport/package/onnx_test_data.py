"""ONNX test data beside the model, in ONNX's own layout: ``model.onnx`` + ``test_data_set_<n>/{input,output}_<i>.pb``.

Each ``.pb`` is a serialized ``onnx.TensorProto`` named after its tensor, written from the bundle's golden files
(the golden inputs and PyTorch's outputs for them), so ONNX Runtime's ``onnx_test_runner`` and other vendors'
conformance tools check the model with no torchport installed. Set 0 is the golden batch; set 1 its first sample
alone, so a runtime that mishandles the dynamic batch axis fails one of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from torchport.bundle.manifest import Bundle, GoldenTensor
from torchport.errors import UsageError
from torchport.package.common import PackageOptions, base_onnx, copy_verified, tolerance
from torchport.package.readmes import onnx_test_data_readme


def _in_model_order(golden: list[GoldenTensor], names: list[str], kind: str) -> list[GoldenTensor]:
    """The golden tensors in the model's input (or output) order: ``input_<i>`` is the model's i-th input."""
    by_name = {tensor.name: tensor for tensor in golden}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise UsageError(f"{kind} '{missing[0]}': the bundle has no golden data for it")
    return [by_name[name] for name in names]


def _write_set(folder: Path, arrays: dict[str, list[tuple[str, np.ndarray]]]) -> None:
    from onnx import numpy_helper

    folder.mkdir(parents=True)
    for kind, tensors in arrays.items():
        for index, (name, array) in enumerate(tensors):
            proto = numpy_helper.from_array(np.ascontiguousarray(array), name=name)
            (folder / f"{kind}_{index}.pb").write_bytes(proto.SerializeToString())


def write_test_data(bundle: Bundle, out: Path, options: PackageOptions) -> None:
    if options.variant is not None:
        raise UsageError(
            f"--variant {options.variant}: ONNX test data pair the golden (PyTorch) outputs with the fp32 "
            "model.onnx only; a variant is checked against its accuracy gate, not these outputs"
        )
    manifest = bundle.manifest
    inputs = _in_model_order(manifest.golden.inputs, [s.name for s in manifest.inputs], "input")
    outputs = _in_model_order(manifest.golden.outputs, [s.name for s in manifest.outputs], "output")
    copy_verified(bundle, base_onnx(bundle).artifact, out / "model.onnx")
    golden = {
        "input": [(t.name, bundle.read_tensor(t)) for t in inputs],
        "output": [(t.name, bundle.read_tensor(t)) for t in outputs],
    }
    sets = {"test_data_set_0": golden}
    if manifest.golden.samples > 1 and all(s.shape[:1] == ["batch"] for s in [*manifest.inputs, *manifest.outputs]):
        sets["test_data_set_1"] = {kind: [(n, a[:1]) for n, a in tensors] for kind, tensors in golden.items()}
    for folder, arrays in sets.items():
        _write_set(out / folder, arrays)
    (out / "README.md").write_text(onnx_test_data_readme(manifest, list(sets), tolerance(manifest)))
