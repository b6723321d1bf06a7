"""The optimised variants `torchport optimize` can add beside ``model.onnx``: what each is called in a config,
the file it becomes, what the manifest says about it, and how it is built.

The registry (``torchport.registry.VARIANTS``) names these constants by import path, so listing or validating
variant names never imports ONNX Runtime; ``VARIANTS.get(name)`` hands back the ``Variant`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from torchport.bundle.manifest import Variant as VariantName
from torchport.config import ExportConfig
from torchport.export.optimize import (
    Recipe,
    VariantSource,
    build_fp16,
    build_int8,
    build_optimized,
    build_ort,
    quiet,
)
from torchport.registry import VARIANTS


@dataclass(frozen=True)
class Variant:
    """One kind of variant. ``kind`` and ``precision`` are what its manifest entry records."""

    name: VariantName
    file_name: str
    kind: Literal["onnx", "ort"]
    precision: Literal["fp32", "fp16", "int8"]
    builder: Callable[[VariantSource, Path], Recipe]

    def build(self, source: VariantSource, target: Path) -> Recipe:
        """Write the variant to ``target``, with ONNX Runtime's own progress output silenced."""
        with quiet():
            return self.builder(source, target)


OPTIMIZED = Variant("optimized", "model.optimized.onnx", "onnx", "fp32", build_optimized)
INT8 = Variant("int8", "model.int8.onnx", "onnx", "int8", build_int8)
FP16 = Variant("fp16", "model.fp16.onnx", "onnx", "fp16", build_fp16)
ORT = Variant("ort", "model.ort", "ort", "fp32", build_ort)


def build_variant(
    name: str, source: Path, target: Path, settings: ExportConfig, calibration: np.ndarray, input_name: str
) -> Recipe:
    """Build the variant registered as ``name`` from the ONNX model at ``source``, outside any bundle."""
    variant: Variant = VARIANTS.get(name)
    return variant.build(VariantSource(source, settings, calibration, input_name), target)
