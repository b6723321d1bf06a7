"""`torchport package --to triton`: a model repository whose config.pbtxt Triton's own ModelConfig message accepts,
with data types, dims and batching from the manifest and the serve settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from torchport.bundle.manifest import read_bundle
from torchport.package import package_bundle
from torchport.serve.settings import DEFAULTS

from .helpers import artifact_sha, assert_close, golden, sha256, triton_model_config

model_config_pb2 = triton_model_config()
FP32 = model_config_pb2.DataType.Value("TYPE_FP32")


def parse_config(folder: Path) -> model_config_pb2.ModelConfig:
    """Triton's own message: a misspelt field or enum value fails the parse."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_the_repository_follows_the_manifest_and_the_serve_settings(digits_bundle: Path, tmp_path: Path) -> None:
    out = package_bundle(digits_bundle, "triton", tmp_path / "repo")
    manifest = read_bundle(digits_bundle).manifest
    model = out / manifest.name
    config = parse_config(model)
    assert (config.name, config.platform) == (manifest.name, "onnxruntime_onnx")
    assert config.max_batch_size == DEFAULTS.max_batch_size
    assert config.dynamic_batching.max_queue_delay_microseconds == round(DEFAULTS.max_batch_delay_ms * 1000)
    assert config.dynamic_batching.default_queue_policy.max_queue_size == DEFAULTS.max_queue
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input", FP32, [1, 8, 8])]
    assert [(t.name, list(t.dims), t.label_filename) for t in config.output] == [
        ("logits", [10], "labels.txt"),
        ("probabilities", [10], "labels.txt"),
    ]
    assert (model / "labels.txt").read_text().splitlines() == manifest.labels
    assert sha256(model / "1" / "model.onnx") == artifact_sha(read_bundle(digits_bundle), None)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", manifest.name]
    assert "tritonserver --model-repository" in (out / "README.md").read_text()


def test_the_config_dims_are_the_models_and_it_answers_the_golden_outputs(digits_bundle: Path, tmp_path: Path) -> None:
    """What Triton will feed (batch + dims) is what the ONNX graph takes, and the answers are PyTorch's."""
    out = package_bundle(digits_bundle, "triton", tmp_path / "repo")
    config = parse_config(out / "digits")
    session = ort.InferenceSession(str(out / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    declared_tensors = [*config.input, *config.output]
    for declared, actual in zip(declared_tensors, [*session.get_inputs(), *session.get_outputs()], strict=True):
        assert declared.name == actual.name
        assert list(declared.dims) == actual.shape[1:]
    inputs, outputs = golden(digits_bundle)
    names = [t.name for t in config.output]
    assert_close(dict(zip(names, session.run(names, inputs), strict=True)), outputs, digits_bundle)


def test_int8_variant_as_a_model_of_its_own(digits_bundle: Path, tmp_path: Path) -> None:
    out = package_bundle(digits_bundle, "triton", tmp_path / "repo", variant="int8")
    assert parse_config(out / "digits.int8").name == "digits.int8"
    assert parse_config(out / "digits").name == "digits"
    bundle = read_bundle(digits_bundle)
    assert sha256(out / "digits.int8" / "1" / "model.onnx") == artifact_sha(bundle, "int8")
    assert sha256(out / "digits" / "1" / "model.onnx") == artifact_sha(bundle, None)


def test_int8_variant_as_version_two(digits_bundle: Path, tmp_path: Path) -> None:
    out = package_bundle(digits_bundle, "triton", tmp_path / "repo", variant="int8", variant_as_version=True)
    config = parse_config(out / "digits")
    assert config.version_policy.HasField("all")  # Triton's default would serve only the newest version
    bundle = read_bundle(digits_bundle)
    assert sha256(out / "digits" / "2" / "model.onnx") == artifact_sha(bundle, "int8")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "digits"]
    assert "version 2 the int8 variant" in (out / "README.md").read_text()


def test_without_batching_the_dims_are_whole_shapes(digits_bundle: Path, tmp_path: Path) -> None:
    out = package_bundle(digits_bundle, "triton", tmp_path / "repo", max_batch_size=0)
    config = parse_config(out / "digits")
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in [*config.input, *config.output]] == [[-1, 1, 8, 8], [-1, 10], [-1, 10]]


def test_the_parse_catches_a_misspelt_field(digits_bundle: Path, tmp_path: Path) -> None:
    """The check above means something: Triton's message refuses a field it does not know."""
    out = package_bundle(digits_bundle, "triton", tmp_path / "repo")
    text = (out / "digits" / "config.pbtxt").read_text()
    assert "max_batch_size" in text
    with pytest.raises(text_format.ParseError, match="max_batch_sizes"):
        text_format.Parse(text.replace("max_batch_size", "max_batch_sizes"), model_config_pb2.ModelConfig())
    with pytest.raises(text_format.ParseError, match="TYPE_FLOAT32"):
        text_format.Parse(text.replace("TYPE_FP32", "TYPE_FLOAT32"), model_config_pb2.ModelConfig())


def test_every_manifest_dtype_has_a_triton_type() -> None:
    from torchport.bundle.manifest import DTYPES
    from torchport.package.triton import TRITON_TYPES

    for dtype in DTYPES:
        model_config_pb2.DataType.Value(TRITON_TYPES[dtype])  # a name Triton's enum knows
        assert np.dtype(dtype)
