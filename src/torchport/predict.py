"""``torchport.Bundle``: a bundle opened for prediction from Python, the way every other runtime reads it.

``Bundle.open(path)`` reads the manifest (paths confined to the bundle), checks every checksum and that each ONNX
graph agrees with the manifest, and then ``predict`` feeds NumPy arrays to ONNX Runtime (or OpenVINO) exactly as
the manifest describes them: raw inputs (the normalisation is inside the graph when
``preprocessing.inside_graph`` says so), the manifest's dtype, a batch axis added for a single sample.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from torchport.bundle.graph import verify_all
from torchport.bundle.manifest import Artifact, Manifest, TensorSpec, read_bundle
from torchport.bundle.manifest import Bundle as StoredBundle
from torchport.errors import BundleError, UsageError, first_line

Runtime = Literal["onnxruntime", "openvino"]
RUNTIME_KINDS: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnx", "ort"), "openvino": ("onnx",)}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


class Bundle:
    """A verified bundle: its manifest, labels and tensor specs, and its models ready to predict."""

    def __init__(self, stored: StoredBundle) -> None:
        """Use :meth:`open`; this wraps a bundle already read and checked."""
        self._stored = stored
        self._sessions: dict[tuple[str, str, int | None], Any] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Bundle:
        """Read ``path/manifest.json`` and check every file it names (checksums, paths inside the bundle, each ONNX
        graph against the manifest): a BundleError of one line otherwise."""
        stored = read_bundle(Path(path))
        verify_all(stored)
        return cls(stored)

    # --- what the manifest says ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._stored.root

    @property
    def manifest(self) -> Manifest:
        return self._stored.manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def task(self) -> Literal["classification", "regression"]:
        return self.manifest.task

    @property
    def labels(self) -> list[str] | None:
        """Class names in output order for a classifier; None for a regression model."""
        return list(self.manifest.labels) if self.task == "classification" and self.manifest.labels else None

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self.manifest.inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self.manifest.outputs)

    @property
    def artifacts(self) -> list[str]:
        """The bundle paths of its models (``model.onnx``, ``model.int8.onnx``, ...), each a valid ``artifact``."""
        return [artifact.path for artifact in self.manifest.artifacts]

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, name={self.name!r}, task={self.task!r}, artifacts={self.artifacts})"

    # --- engines -----------------------------------------------------------------------------------------------

    def session(
        self, runtime: Runtime = "onnxruntime", artifact: str = "model.onnx", threads: int | None = None
    ) -> Any:
        """The engine's own session for ``artifact`` (a bundle path, or a variant name such as ``int8``), made once
        and kept: an ``onnxruntime.InferenceSession``, or an OpenVINO ``CompiledModel`` (CPU, f32 precision).
        ``threads``: intra-op threads (default: the engine's choice)."""
        chosen = self._artifact(artifact, runtime)
        key = (runtime, chosen.path, threads)
        if key not in self._sessions:
            path = self._stored.verified_path(chosen)
            try:
                self._sessions[key] = _open_session(runtime, path, threads)
            except Exception as exc:  # the engine's own error types; its message says what it could not read
                raise BundleError(
                    f"{chosen.path}: {runtime} cannot load it: {type(exc).__name__}: {first_line(exc)}"
                ) from None
        return self._sessions[key]

    def _artifact(self, name: str, runtime: str) -> Artifact:
        """The artifact named by its bundle path, variant (``int8``) or precision (``fp32``) that ``runtime`` runs."""
        if runtime not in RUNTIME_KINDS:
            raise UsageError(f"runtime '{runtime}': expected one of {', '.join(RUNTIME_KINDS)}")
        runnable = [a for a in self.manifest.artifacts if a.kind in RUNTIME_KINDS[runtime]]
        for artifact in runnable:
            if name in (artifact.path, artifact.variant) or (artifact.variant is None and name == artifact.precision):
                return artifact
        choices = ", ".join(a.path for a in runnable) or "none"
        raise UsageError(f"artifact '{name}': not one that {runtime} runs in {self.path} (choose from: {choices})")

    # --- prediction ----------------------------------------------------------------------------------------------

    def predict(
        self,
        x: ArrayLike | Mapping[str, ArrayLike],
        *,
        runtime: Runtime = "onnxruntime",
        artifact: str = "model.onnx",
    ) -> dict[str, np.ndarray]:
        """The model's outputs by name for raw inputs ``x``: one sample or a batch (a batch axis is added when ``x``
        has the rank of one sample, and taken off the outputs again), cast to the manifest's dtype. A model with
        several inputs takes a mapping of input name to array. Wrong shapes or non-numbers: a UsageError naming
        the input."""
        feeds, single = self._feeds(x)
        feeds = {name: self._preprocess(array) for name, array in feeds.items()}
        outputs = _run(runtime, self.session(runtime, artifact), feeds, self.outputs)
        return {name: value[0] if single else value for name, value in outputs.items()}

    def classify(
        self, x: ArrayLike, *, runtime: Runtime = "onnxruntime", artifact: str = "model.onnx"
    ) -> list[str] | str:
        """The label of the highest-scoring class: one for a single sample, a list for a batch (classifiers only)."""
        labels = self.labels
        if labels is None:
            raise UsageError(f"classify: {self.name} is a {self.task} model; use predict")
        outputs = self.predict(x, runtime=runtime, artifact=artifact)
        scores = next(iter(outputs.values()))  # logits or probabilities: the same winner
        winners = np.asarray(scores).argmax(axis=-1)
        return labels[int(winners)] if winners.ndim == 0 else [labels[int(i)] for i in winners]

    def _feeds(self, x: ArrayLike | Mapping[str, ArrayLike]) -> tuple[dict[str, np.ndarray], bool]:
        """``x`` as one checked array per input, and whether it was a single sample (every input must agree)."""
        if self._takes_rows(x):
            from torchport.tabular import encode_rows

            # raw table rows, encoded exactly as training encoded its own (a DataError names the column at fault)
            x = encode_rows(x, self.manifest.preprocessing.columns)
        elif hasattr(x, "columns") and hasattr(x, "to_numpy"):
            raise UsageError(f"predict: {self.name} takes no table rows (no preprocessing.columns); pass an array")
        if isinstance(x, Mapping):
            unknown = sorted(set(x) - {spec.name for spec in self.inputs})
            if unknown:
                raise UsageError(f"input '{unknown[0]}': not an input of {self.name} ({self._input_names()})")
            given = dict(x)
        elif len(self.inputs) == 1:
            given = {self.inputs[0].name: x}
        else:
            raise UsageError(f"predict: {self.name} takes several inputs; pass a mapping ({self._input_names()})")
        checked = {spec.name: _checked_input(spec, given.get(spec.name)) for spec in self.inputs}
        singles = {single for _, single in checked.values()}
        if len(singles) > 1:
            raise UsageError("predict: give every input as one sample, or every input as a batch")
        return {name: array for name, (array, _) in checked.items()}, singles.pop()

    def _takes_rows(self, x: object) -> bool:
        """Raw table rows: a DataFrame, or a mapping of column names none of which is a graph input, for a bundle
        whose manifest lists its raw columns."""
        if not self.manifest.preprocessing.columns:
            return False
        if hasattr(x, "columns") and hasattr(x, "to_numpy"):
            return True
        return isinstance(x, Mapping) and not set(x) & {spec.name for spec in self.inputs}

    def _input_names(self) -> str:
        return "inputs: " + ", ".join(spec.name for spec in self.inputs)

    def _preprocess(self, array: np.ndarray) -> np.ndarray:
        """Raw inputs as the graph takes them: unchanged when the normalisation is inside the graph (every bundle
        torchport writes today), else standardised with the manifest's mean and std."""
        steps = self.manifest.preprocessing
        if steps.inside_graph:
            return array
        if steps.normalization.get("kind") != "standardize":
            kind = steps.normalization.get("kind", "none")
            raise BundleError(f"{self.path}: preprocessing '{kind}' outside the graph is not one predict can apply")
        shape = steps.normalization["broadcast_shape"]
        mean = np.asarray(steps.normalization["mean"], dtype=np.float64).reshape(shape)
        std = np.asarray(steps.normalization["std"], dtype=np.float64).reshape(shape)
        return ((array - mean) / std).astype(array.dtype)


def _checked_input(spec: TensorSpec, value: ArrayLike | None) -> tuple[np.ndarray, bool]:
    """``value`` as a C-ordered array of ``spec``'s dtype with a batch axis, and whether one was added."""
    if value is None:
        raise UsageError(f"input '{spec.name}': missing")
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise UsageError(f"input '{spec.name}': not an array: {first_line(exc)}") from None
    want = np.dtype(spec.dtype)
    if array.dtype.kind not in "biuf":
        raise UsageError(f"input '{spec.name}': expected numbers ({spec.dtype}), got {array.dtype}")
    if array.dtype.kind == "f" and want.kind in "iu":
        raise UsageError(f"input '{spec.name}': {array.dtype} values for a {spec.dtype} input; round them first")
    batched = bool(spec.shape) and spec.shape[0] == "batch"
    sample = spec.shape[1:] if batched else spec.shape
    single = batched and array.ndim == len(sample)
    if single:
        array = array[None]
    expected = ["batch" if dim == "batch" else int(dim) for dim in spec.shape]
    fits = array.ndim == len(expected) and all(
        dim in ("batch", got) for dim, got in zip(expected, array.shape, strict=True)
    )
    if not fits:
        wanted = f"({', '.join(map(str, expected))})"
        if batched:
            wanted += f" or one sample ({', '.join(map(str, sample))})"
        raise UsageError(f"input '{spec.name}': expected shape {wanted}, got {tuple(np.shape(value))}")
    return np.ascontiguousarray(array, dtype=want), single


def _open_session(runtime: str, path: Path, threads: int | None) -> Any:
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        # f32: the CPU plugin would otherwise pick bf16 on CPUs that have it, and disagree with the other engines
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        return core.compile_model(core.read_model(str(path)), "CPU", config)
    from torchport.sessions import onnxruntime_session

    return onnxruntime_session(path, threads=threads or 0)  # 0: ONNX Runtime's own choice


def _run(runtime: str, session: Any, feeds: dict[str, np.ndarray], outputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """One call of the engine; outputs in the manifest's dtypes (an fp16 variant takes and gives float16)."""
    names = [spec.name for spec in outputs]
    if runtime == "openvino":
        results = session(feeds)
        by_name = {name: results[port] for port in session.outputs for name in port.get_names()}
        values = [by_name[name] for name in names]
    else:
        wanted = {meta.name: _ORT_TYPES.get(meta.type) for meta in session.get_inputs()}
        cast = {name: array.astype(wanted.get(name) or array.dtype, copy=False) for name, array in feeds.items()}
        values = session.run(names, cast)
    return {
        spec.name: np.asarray(value).astype(spec.dtype, copy=False) for spec, value in zip(outputs, values, strict=True)
    }
