"""The served models: every ONNX artifact of every bundle, by model name and version.

A bundle's manifest ``name`` is the model name. Version ``"1"`` is the fp32 ``model.onnx`` export (the default);
each ONNX variant the bundle holds (``optimized``, ``int8``, ``fp16``) is served as a version of that name and as
the model ``name.variant`` too. Each artifact gets one ONNX Runtime session, created once at start-up from its
checksum-verified file and warmed with one batch, and its own dynamic batcher.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torchport.bundle.graph import check_graph
from torchport.bundle.manifest import TableColumn, TensorSpec, read_bundle
from torchport.errors import BundleError, UsageError
from torchport.serve.batcher import Arrays, DynamicBatcher
from torchport.serve.protocol import tensor_metadata
from torchport.serve.rows import metadata_parameters
from torchport.serve.schema import ModelMetadata
from torchport.sessions import onnxruntime_session

DEFAULT_VERSION = "1"
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
}


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class ServedModel:
    name: str
    version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    run: Callable[[Arrays], Arrays]
    batcher: DynamicBatcher | None = None
    columns: list[TableColumn] = field(default_factory=list)  # raw table columns a request may give instead

    @property
    def label(self) -> str:
        """``name:version`` of the artifact: the ``model`` label of its metrics, and its batcher's name."""
        return f"{self.name}:{self.version}"

    @property
    def mergeable(self) -> bool:
        return all(spec.shape[:1] == ["batch"] for spec in [*self.inputs, *self.outputs])


def _runner(session: Any, outputs: list[TensorSpec]) -> Callable[[Arrays], Arrays]:
    """Feed arrays in the manifest's dtypes; cast to what the session wants (fp16 variants) and back."""
    wanted = {meta.name: _ORT_TYPES.get(meta.type) for meta in session.get_inputs()}
    names = [spec.name for spec in outputs]
    dtypes = [np.dtype(spec.dtype) for spec in outputs]

    def run(feed: Arrays) -> Arrays:
        cast = {
            name: value if wanted.get(name) in (None, value.dtype) else value.astype(wanted[name])
            for name, value in feed.items()
        }
        results = session.run(names, cast)
        return {
            name: np.asarray(value).astype(dtype, copy=False)
            for name, value, dtype in zip(names, results, dtypes, strict=True)
        }

    return run


def _warm(model: ServedModel) -> None:
    feed = {
        spec.name: np.zeros([1 if dim == "batch" else int(dim) for dim in spec.shape], dtype=spec.dtype)
        for spec in model.inputs
    }
    model.run(feed)


class Repository:
    """Models by (name, version); ``get(name)`` is the default version."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], ServedModel] = {}
        self.versions: dict[str, list[str]] = {}

    def add(self, model: ServedModel, name: str, version: str) -> None:
        if (name, version) in self.models:
            raise UsageError(f"two bundles serve model '{name}' version '{version}'; give each bundle its own name")
        self.models[(name, version)] = model
        self.versions.setdefault(name, []).append(version)

    def get(self, name: str, version: str | None = None) -> ServedModel | None:
        versions = self.versions.get(name)
        if not versions:
            return None
        return self.models.get((name, version if version is not None else versions[0]))

    def unique(self) -> list[ServedModel]:
        seen: dict[int, ServedModel] = {}
        for model in self.models.values():
            seen.setdefault(id(model), model)
        return list(seen.values())

    def metadata(self, name: str, model: ServedModel) -> ModelMetadata:
        return ModelMetadata(
            name=name,
            versions=self.versions[name],
            platform="onnxruntime_onnx",
            inputs=[tensor_metadata(spec) for spec in model.inputs],
            outputs=[tensor_metadata(spec) for spec in model.outputs],
            parameters=metadata_parameters(model.columns) if model.columns else None,
        )


def load_repository(bundles: list[Path], threads: int | None = None, variants: bool = True) -> Repository:
    """Read every bundle, open one session per ONNX artifact, warm it, and index it by name and version."""
    threads = threads or default_threads()
    repository = Repository()
    for root in bundles:
        bundle = read_bundle(Path(root))
        check_graph(bundle)  # before the manifest's shapes size anything (the warm-up batch, request checks)
        manifest = bundle.manifest
        onnx = [a for a in manifest.artifacts if a.kind == "onnx"]
        base = [a for a in onnx if a.variant is None]
        if not base:
            raise BundleError(f"{root}: the bundle has no exported ONNX model to serve")
        chosen = [(DEFAULT_VERSION, base[0])]
        if variants:
            chosen += [(str(a.variant), a) for a in onnx if a.variant is not None]
        for version, artifact in chosen:
            session = onnxruntime_session(bundle.verified_path(artifact), threads)
            model = ServedModel(
                name=manifest.name,
                version=version,
                inputs=manifest.inputs,
                outputs=manifest.outputs,
                run=_runner(session, manifest.outputs),
                columns=manifest.preprocessing.columns,
            )
            _warm(model)
            repository.add(model, manifest.name, version)
            if version != DEFAULT_VERSION:
                repository.add(model, f"{manifest.name}.{version}", DEFAULT_VERSION)
    return repository
