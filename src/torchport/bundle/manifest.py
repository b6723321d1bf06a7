"""The bundle format: the contract with every runtime in every language.

``manifest.json`` names every file of the bundle with its SHA-256 and size; tensors in ``golden/`` are raw
little-endian, C-order arrays whose dtype and shape the manifest gives, so a reader in any language needs no
NumPy. Readers refuse a path that leaves the bundle and a file whose checksum does not match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from torchport.errors import BundleError

FORMAT_VERSION: Literal["1.0"] = "1.0"
MANIFEST = "manifest.json"
DTYPES: dict[str, str] = {"float32": "<f4", "float16": "<f2", "int64": "<i8", "int32": "<i4", "uint8": "|u1"}

Dtype = Literal["float32", "float16", "int64", "int32", "uint8"]
Sha256 = str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Model):
    """An input or output of the model; ``"batch"`` marks the dynamic first axis."""

    name: str
    dtype: Dtype
    shape: list[int | Literal["batch"]]


class FileEntry(_Model):
    path: str = Field(description="relative to the bundle folder, '/'-separated; never absolute, never '..'")
    sha256: Sha256 = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Latency(_Model):
    """Wall time of one ``session.run`` in ONNX Runtime on the CPU, over ``iterations`` timed runs after warm-up."""

    batch: int = Field(ge=1)
    threads: int = Field(ge=1, description="intra-op threads of the session")
    median_ms: float
    p99_ms: float = Field(description="99th percentile; with few iterations this is close to the maximum")
    iterations: int = Field(ge=1)


class AccuracyGate(_Model):
    """The variant's validation metric against the fp32 ONNX model's, both run in ONNX Runtime."""

    metric: str = Field(description="e.g. val_accuracy (higher is better) or val_rmse (lower is better)")
    value: float
    reference: float = Field(description="the same metric for the fp32 model.onnx")
    change: float = Field(
        description="accuracy: absolute drop (reference - value); rmse: relative rise (value / reference - 1)"
    )
    max_drop: float = Field(description="export.max_accuracy_drop: the largest change the gate allows")
    passed: bool


Variant = Literal["optimized", "int8", "fp16", "ort"]


class Artifact(FileEntry):
    kind: Literal["onnx", "aoti", "ort"] = Field(
        description="onnx: ONNX model; aoti: AOTInductor .pt2; ort: ORT format"
    )
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    opset: int | None = None
    runtime: str = Field(description="the runtime the artifact is verified in, e.g. onnxruntime")
    variant: Variant | None = Field(
        None, description="how it was derived from derived_from; null for the artifacts export wrote"
    )
    derived_from: str | None = Field(None, description="the bundle path of the artifact this variant was made from")
    recipe: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="the settings that made the variant, e.g. calibration method"
    )
    accuracy: AccuracyGate | None = None
    latency: list[Latency] = Field(default_factory=list, description="ONNX Runtime CPU latency per batch and threads")


class GoldenTensor(FileEntry):
    name: str
    dtype: Dtype
    shape: list[int]


class Golden(_Model):
    """Validation samples and the PyTorch reference's outputs for them, for conformance in any language."""

    samples: int
    byte_order: Literal["little"] = "little"
    layout: Literal["row-major"] = "row-major"
    inputs: list[GoldenTensor]
    outputs: list[GoldenTensor]


class TableColumn(_Model):
    """How one raw table column becomes the graph input's features (``torchport.tabular`` encodes by it)."""

    name: str = Field(description="the raw column, as in the training table")
    kind: Literal["numeric", "categorical"] = Field(
        description="numeric: one float32 feature; categorical: a one-hot block, one feature per category"
    )
    categories: list[str] = Field(
        default_factory=list,
        description="categorical: the known values as text, in one-hot order; a value matches by its text. "
        "Empty for numeric",
    )


class Preprocessing(_Model):
    inside_graph: bool = Field(True, description="true: feed raw inputs; normalisation is part of the graph")
    normalization: dict[str, Any] = Field(default_factory=dict)
    input_range: list[float] = Field(description="min and max of the training inputs")
    feature_names: list[str] = Field(default_factory=list)
    columns: list[TableColumn] = Field(
        default_factory=list,
        description="tables: the raw columns, in feature order, and how each is encoded into the input vector "
        "(numbers as float32, categories one-hot); empty when the input is not a table",
    )
    description: str = ""

    @model_serializer(mode="wrap")
    def _columns_only_for_tables(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An image or array bundle is written without ``columns``, exactly as before the key existed, so a
        torchport that predates it (its readers refuse unknown keys) still opens the bundle."""
        dumped: dict[str, Any] = handler(self)
        if not self.columns:
            dumped.pop("columns", None)
        return dumped


class OutputParity(_Model):
    max_abs: float
    max_rel: float
    needed_atol: float = Field(description="the smallest atol that passes at the configured rtol")
    argmax_agreement: float | None = None
    passed: bool


class ParityCheck(_Model):
    inputs: str = Field(description="e.g. 'validation', 'random batch 7', 'golden'")
    batch: int
    outputs: dict[str, OutputParity]
    passed: bool


class ArtifactVerification(_Model):
    artifact: str
    runtime: str
    reference: Literal["pytorch", "golden"]
    atol: float
    rtol: float
    passed: bool
    checks: list[ParityCheck]
    first_diverging_layer: str | None = None
    seconds: float
    judged_by: Literal["parity", "accuracy"] = Field(
        "parity",
        description="parity: every output within atol/rtol; accuracy (reduced-precision variants): the errors are "
        "recorded against atol/rtol for information, and the artifact passes on finite outputs and its accuracy gate",
    )


class Provenance(_Model):
    torchport: str
    torch: str
    onnx: str | None = None
    onnxruntime: str | None = None
    python: str
    config_hash: str
    config_name: str
    git_commit: str | None = None
    created: str
    checkpoint: str
    data_source: str


class VariantOutcome(_Model):
    """What `torchport optimize` did with one requested variant; refused and failed ones are not in the bundle."""

    variant: Variant
    path: str
    status: Literal["kept", "refused", "failed"]
    reason: str = Field("", description="one line: why it was refused or failed")


class RunnerLatency(_Model):
    batch: int = Field(ge=1)
    median_ms: float
    iterations: int = Field(ge=1)


class ConformanceResult(_Model):
    """One runtime's run of the golden inputs (`torchport conformance`), compared with the golden outputs."""

    runtime: str = Field(description="e.g. python, openvino, node, browser, cpp")
    engine: str = Field("", description="the library that ran the artifact, e.g. onnxruntime-node")
    version: str = ""
    artifact: str
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    status: Literal["passed", "failed", "error", "skipped"]
    reason: str = Field("", description="one line: why it failed, errored or was skipped")
    atol: float
    rtol: float
    outputs: dict[str, OutputParity] = Field(default_factory=dict)
    latency: list[RunnerLatency] = Field(default_factory=list, description="median wall time per batch size")
    seconds: float = Field(0.0, description="wall time of the whole runner process, start-up included")
    checked: str = Field("", description="ISO time of the run")


class Manifest(_Model):
    format_version: Literal["1.0"] = FORMAT_VERSION
    # a plain file name: servers, runners and `torchport package` make folders and URLs of it
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # and not only dots
    task: Literal["classification", "regression"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str]
    preprocessing: Preprocessing
    artifacts: list[Artifact]
    golden: Golden
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="metrics of the exported checkpoint: val_* on the validation split, test_* on the test split",
    )
    verification: list[ArtifactVerification] = Field(default_factory=list)
    variants: list[VariantOutcome] = Field(default_factory=list, description="the last optimize run's outcomes")
    conformance: list[ConformanceResult] = Field(
        default_factory=list, description="the last `torchport conformance` run, one entry per runtime and artifact"
    )
    provenance: Provenance


def manifest_json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "torchport bundle manifest"
    return schema


# --- files ---------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_path(root: Path, relative: str, what: str = "bundle path", inside: str = "the bundle") -> Path:
    """``root/relative`` if it stays inside ``root`` with no link on the way; BundleError otherwise.

    ``what`` names the value in the message (e.g. the manifest field), ``inside`` the folder it must stay in.
    """
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or "\\" in relative or relative.startswith("~"):
        raise BundleError(f"{what} '{relative}' is not a plain relative path; refusing it")
    if any(part == ".." for part in pure.parts):
        raise BundleError(f"{what} '{relative}' climbs out of {inside} with '..'; refusing it")
    current = root
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            raise BundleError(f"{what} '{relative}' goes through a link ({part}); refusing it")
    resolved = current.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise BundleError(f"{what} '{relative}' resolves outside {inside}; refusing it")
    return current


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }


def write_tensor(root: Path, relative: str, name: str, array: np.ndarray) -> GoldenTensor:
    """Store ``array`` as raw little-endian bytes and describe it."""
    dtype = str(array.dtype)
    if dtype not in DTYPES:
        raise BundleError(f"tensor '{name}': dtype {dtype} is not one of {', '.join(DTYPES)}")
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(np.ascontiguousarray(array, dtype=DTYPES[dtype]).tobytes())
    return GoldenTensor(name=name, dtype=dtype, shape=list(array.shape), **file_entry(root, target))


class Bundle:
    """A bundle read from disk; every file access goes through ``path`` (safe) and ``verified_path`` (checksum)."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        # (path, sha256) -> (inode, size, mtime) when its checksum last matched: the graph check and the reader
        # that follows it do not hash the same large file twice
        self._matched: dict[tuple[str, str], tuple[int, int, int]] = {}

    def path(self, relative: str) -> Path:
        return safe_path(self.root, relative)

    def verified_path(self, entry: FileEntry) -> Path:
        target = self.path(entry.path)
        if not target.is_file():
            raise BundleError(f"bundle file '{entry.path}' is missing")
        stat = target.stat()
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._matched.get((entry.path, entry.sha256)) == signature:
            return target
        actual = sha256_file(target)
        if actual != entry.sha256:
            raise BundleError(
                f"bundle file '{entry.path}' fails its checksum: "
                f"SHA-256 {actual[:12]}… != manifest {entry.sha256[:12]}…"
            )
        self._matched[(entry.path, entry.sha256)] = signature
        return target

    def files(self) -> list[FileEntry]:
        """Every file the manifest vouches for with a checksum."""
        return [*self.manifest.artifacts, *self.manifest.golden.inputs, *self.manifest.golden.outputs]

    def read_tensor(self, tensor: GoldenTensor) -> np.ndarray:
        raw = self.verified_path(tensor).read_bytes()
        array = np.frombuffer(raw, dtype=DTYPES[tensor.dtype])
        expected = int(np.prod(tensor.shape))
        if array.size != expected:
            raise BundleError(
                f"golden tensor '{tensor.name}' holds {array.size} values, its shape {tensor.shape} needs {expected}"
            )
        return array.reshape(tensor.shape).astype(tensor.dtype)

    def artifact(self, kind: str, precision: str = "fp32") -> Artifact | None:
        return next((a for a in self.manifest.artifacts if a.kind == kind and a.precision == precision), None)

    def save(self) -> None:
        text = self.manifest.model_dump_json(indent=2, exclude_none=False)
        (self.root / MANIFEST).write_text(text + "\n")


def read_bundle(root: Path) -> Bundle:
    """Read and validate ``root/manifest.json``; every path it names is checked to stay inside the bundle."""
    manifest_path = root / MANIFEST
    if manifest_path.is_symlink():  # it could lead anywhere, and `save` would write through it
        raise BundleError(f"{manifest_path}: {MANIFEST} is a link; a bundle's manifest must be a plain file in it")
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: {MANIFEST} not found")
    try:
        raw = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise BundleError(f"{manifest_path}: not UTF-8 text (byte {exc.start} is {byte:#04x})") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{manifest_path}: {where}: {first['msg']}") from None
    bundle = Bundle(root, manifest)
    _confine_paths(bundle)
    return bundle


def checkpoint_path(bundle: Bundle) -> Path:
    """The run's checkpoint that ``provenance.checkpoint`` names: ``RUN_DIR/checkpoints/<name>.pt``, never outside."""
    name = bundle.manifest.provenance.checkpoint
    folder, what, where = bundle.root.parent / "checkpoints", "manifest provenance.checkpoint", "the run's checkpoints"
    safe_path(folder, name, what, where)  # the message names the value as the manifest gives it
    return safe_path(folder, f"{name}.pt", what, where)


def _confine_paths(bundle: Bundle) -> None:
    """Every path the manifest holds stays in the bundle (or, for the checkpoint, in the run dir around it), whether
    or not a reader opens it today: a path is refused where the manifest is read, not where it is used."""
    manifest = bundle.manifest
    for entry in [*manifest.artifacts, *manifest.golden.inputs, *manifest.golden.outputs]:
        bundle.path(entry.path)
    named = [(f"artifacts[{i}].derived_from", a.derived_from) for i, a in enumerate(manifest.artifacts)]
    named += [(f"variants[{i}].path", v.path) for i, v in enumerate(manifest.variants)]
    named += [(f"verification[{i}].artifact", v.artifact) for i, v in enumerate(manifest.verification)]
    named += [(f"conformance[{i}].artifact", c.artifact) for i, c in enumerate(manifest.conformance)]
    for field, value in named:
        if value is not None:
            safe_path(bundle.root, value, f"manifest {field}")
    checkpoint_path(bundle)
