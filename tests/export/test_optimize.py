"""The variant catalogue: every registered variant builds from an exported model.onnx with ONNX Runtime's tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from torchport.config import ExportConfig
from torchport.errors import ConfigError
from torchport.export.variants import Variant, build_variant
from torchport.registry import VARIANTS
from torchport.sessions import onnx_predictor


@pytest.mark.parametrize("name", VARIANTS.names())
def test_every_registered_variant_builds_its_file(name: str, exported_digits: Path, tmp_path: Path) -> None:
    variant = VARIANTS.get(name)
    assert isinstance(variant, Variant) and variant.name == name
    target = tmp_path / variant.file_name
    source = exported_digits / "bundle" / "model.onnx"
    input_name = onnx.load(str(source)).graph.input[0].name
    calibration = np.random.default_rng(0).uniform(0, 16, size=(64, 1, 8, 8)).astype(np.float32)
    recipe = build_variant(name, source, target, ExportConfig(int8_mode="static"), calibration, input_name)
    assert target.is_file() and str(recipe["tool"]).startswith("onnxruntime")
    logits = next(iter(onnx_predictor(target)(calibration[:4]).values()))
    assert logits.shape == (4, 10) and np.isfinite(logits).all()


def test_variant_files_are_distinct_and_unknown_names_are_refused() -> None:
    files = [VARIANTS.get(name).file_name for name in VARIANTS.names()]
    assert len(set(files)) == len(files)
    with pytest.raises(ConfigError, match="unknown variant 'int4'"):
        build_variant("int4", Path("model.onnx"), Path("out.onnx"), ExportConfig(), np.zeros(0), "input")


def test_variants_config_rejects_repeats_and_unknown_names() -> None:
    assert ExportConfig().variants == ["optimized", "int8", "fp16", "ort"]
    with pytest.raises(ValidationError, match="listed twice"):
        ExportConfig(variants=["int8", "int8"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"export.variants\[0\]: unknown variant 'int4'; did you mean 'int8'\?"):
        ExportConfig(variants=["int4"])
