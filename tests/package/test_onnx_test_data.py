"""`torchport package --to onnx-test-data`: ONNX's own test layout beside the model, read back with ONNX's own
library and run by two engines that know nothing of torchport (ONNX Runtime and ONNX's reference evaluator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from torchport.bundle.manifest import read_bundle
from torchport.errors import UsageError
from torchport.package import package_bundle

from .helpers import artifact_sha, assert_close, sha256


def read_set(folder: Path, kind: str) -> dict[str, np.ndarray]:
    """``<kind>_<i>.pb`` in index order, by the tensor name each proto carries."""
    files = sorted(folder.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    protos = [onnx.load_tensor(str(path)) for path in files]
    return {proto.name: numpy_helper.to_array(proto) for proto in protos}


def raw_golden(bundle_dir: Path) -> dict[str, np.ndarray]:
    """The golden files as a reader with no torchport sees them: raw little-endian, shape from the manifest."""
    manifest = read_bundle(bundle_dir).manifest
    tensors = [*manifest.golden.inputs, *manifest.golden.outputs]
    return {
        t.name: np.fromfile(bundle_dir / t.path, dtype=np.dtype(t.dtype).newbyteorder("<")).reshape(t.shape)
        for t in tensors
    }


def test_the_test_data_are_the_golden_files(digits_bundle: Path, tmp_path: Path) -> None:
    out = package_bundle(digits_bundle, "onnx-test-data", tmp_path / "digits")
    assert sha256(out / "model.onnx") == artifact_sha(read_bundle(digits_bundle), None)
    model = onnx.load(str(out / "model.onnx"))
    expected = raw_golden(digits_bundle)
    sets = {
        folder: read_set(out / folder, "input") | read_set(out / folder, "output")
        for folder in ["test_data_set_0", "test_data_set_1"]
    }
    assert list(read_set(out / "test_data_set_0", "input")) == [i.name for i in model.graph.input]
    assert list(read_set(out / "test_data_set_0", "output")) == [o.name for o in model.graph.output]
    assert set(sets["test_data_set_0"]) == set(sets["test_data_set_1"]) == set(expected)
    for name, array in expected.items():  # bit-equal: copied from the golden files, not recomputed
        np.testing.assert_array_equal(sets["test_data_set_0"][name], array)
        np.testing.assert_array_equal(sets["test_data_set_1"][name], array[:1])
    assert "onnx_test_runner" in (out / "README.md").read_text()


@pytest.mark.parametrize("data_set", ["test_data_set_0", "test_data_set_1"])
def test_onnx_runtime_and_the_onnx_reference_evaluator_pass_the_test_data(
    digits_bundle: Path, tmp_path: Path, data_set: str
) -> None:
    out = package_bundle(digits_bundle, "onnx-test-data", tmp_path / "digits")
    inputs, expected = read_set(out / data_set, "input"), read_set(out / data_set, "output")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = list(expected)
    assert_close(dict(zip(names, session.run(names, inputs), strict=True)), expected, digits_bundle)
    reference = ReferenceEvaluator(str(out / "model.onnx"))
    assert_close(dict(zip(names, reference.run(names, inputs), strict=True)), expected, digits_bundle)


def test_a_variant_is_refused(digits_bundle: Path, tmp_path: Path) -> None:
    """The golden outputs are PyTorch's fp32 answers: pairing them with the INT8 model would fail any runner."""
    with pytest.raises(UsageError, match=r"^--variant int8: ONNX test data pair the golden"):
        package_bundle(digits_bundle, "onnx-test-data", tmp_path / "digits", variant="int8")
    assert not (tmp_path / "digits").exists()
