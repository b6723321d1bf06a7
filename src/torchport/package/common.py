"""What every hand-off target shares: the options of `torchport package`, the ONNX artifacts it hands over, and
copying a file only after its checksum matched the manifest."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from torchport.bundle.manifest import Artifact, Bundle, FileEntry, Manifest
from torchport.config import VerifyConfig
from torchport.errors import UsageError

#: the fp32 export: version "1" in `torchport serve`, and in every hand-off
BASE = "fp32"


@dataclass(frozen=True)
class PackageOptions:
    """The choices a target may read; each target ignores the ones that do not concern it."""

    variant: str | None = None  # an ONNX variant (int8, fp16, optimized) handed over beside (or instead of) fp32
    variant_as_version: bool = False  # triton/kserve: the variant as version 2 of the model, not a model of its own
    max_batch_size: int | None = None  # triton/kserve: None means serve/settings.py's default; 0 turns batching off
    storage_uri: str | None = None  # kserve: where the output folder is uploaded
    image: str | None = None  # kserve: the image built from docker/serve.Dockerfile


@dataclass(frozen=True)
class Handed:
    """One ONNX artifact on its way out: ``variant`` is BASE for the fp32 export."""

    variant: str
    artifact: Artifact


def base_onnx(bundle: Bundle) -> Handed:
    found = next((a for a in bundle.manifest.artifacts if a.kind == "onnx" and a.variant is None), None)
    if found is None:
        raise UsageError(f"{bundle.root}: the bundle has no exported ONNX model (model.onnx) to hand over")
    return Handed(BASE, found)


def variant_onnx(bundle: Bundle, variant: str) -> Handed:
    """The bundle's ONNX variant named ``variant``; a one-line refusal listing the ones it has otherwise."""
    onnx = {str(a.variant): a for a in bundle.manifest.artifacts if a.kind == "onnx" and a.variant is not None}
    if variant not in onnx:
        have = ", ".join(sorted(onnx)) or "none"
        raise UsageError(
            f"--variant {variant}: the bundle has no ONNX variant '{variant}' (it has: {have}); "
            "`torchport optimize` adds them (export.variants)"
        )
    return Handed(variant, onnx[variant])


def handed_artifacts(bundle: Bundle, options: PackageOptions) -> list[Handed]:
    """fp32 first, then the variant asked for."""
    chosen = [base_onnx(bundle)]
    if options.variant is not None:
        chosen.append(variant_onnx(bundle, options.variant))
    return chosen


def copy_verified(bundle: Bundle, entry: FileEntry, target: Path) -> Path:
    """Copy a bundle file only once its SHA-256 matched the manifest: nothing unvouched-for is handed over."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle.verified_path(entry), target)
    return target


def kubernetes_name(name: str) -> str:
    """A DNS-1123 label from a model name (``digits_pool`` -> ``digits-pool``): Kubernetes refuses the others."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "model"


def tolerance(manifest: Manifest) -> tuple[float, float]:
    """(atol, rtol) the fp32 ONNX model was verified with against PyTorch; the config's defaults if it was not."""
    base = next((a.path for a in manifest.artifacts if a.kind == "onnx" and a.variant is None), None)
    for entry in manifest.verification:
        if entry.artifact == base and entry.judged_by == "parity":
            return entry.atol, entry.rtol
    defaults = VerifyConfig()
    return defaults.atol, defaults.rtol
