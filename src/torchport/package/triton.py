"""A Triton Inference Server model repository from a bundle: ``<name>/config.pbtxt`` + ``<name>/1/model.onnx``.

The config is written from the manifest alone: Triton's data types for its dtypes, its dims without the batch axis
(Triton adds it when ``max_batch_size`` > 0), and batching as ``torchport serve`` batches (serve/settings.py), so a
model behaves alike on one machine and on a Triton fleet. Written as text, not through Triton's protobuf, so that
packaging needs no Triton library; the tests parse it into Triton's own ``ModelConfig`` message.
"""

from __future__ import annotations

import json
from pathlib import Path

from torchport.bundle.manifest import Bundle, Manifest, TensorSpec
from torchport.errors import UsageError
from torchport.package.common import BASE, Handed, PackageOptions, copy_verified, handed_artifacts
from torchport.package.readmes import triton_readme
from torchport.serve.settings import DEFAULTS

#: numpy dtype name -> Triton's DataType (model_config.proto); the manifest's dtypes all have one
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
LABELS_FILE = "labels.txt"


def max_batch_size(options: PackageOptions) -> int:
    size = DEFAULTS.max_batch_size if options.max_batch_size is None else options.max_batch_size
    if size < 0:
        raise UsageError(f"--max-batch-size must be 0 (no batching) or more (got {size})")
    return size


def triton_type(kind: str, spec: TensorSpec) -> str:
    found = TRITON_TYPES.get(str(spec.dtype))
    if found is None:
        raise UsageError(
            f"{kind} '{spec.name}': dtype {spec.dtype} has no Triton data type (Triton takes {', '.join(TRITON_TYPES)})"
        )
    return found


def triton_dims(kind: str, spec: TensorSpec, batch: int) -> list[int]:
    """The dims Triton wants: without the leading batch axis when batching (Triton adds it), -1 for it when not."""
    shape = list(spec.shape)
    if batch == 0:
        return [-1 if dim == "batch" else int(dim) for dim in shape]
    if shape[:1] != ["batch"] or "batch" in shape[1:]:
        raise UsageError(
            f"{kind} '{spec.name}': Triton batching needs \"batch\" as the first axis only, the manifest gives "
            f"{shape}; pass --max-batch-size 0 to hand it over without batching"
        )
    return [int(dim) for dim in shape[1:]]


def _quoted(text: str) -> str:
    """A protobuf text-format string: JSON's escapes (``\\"``, ``\\\\``, ``\\n``) are valid there too."""
    return json.dumps(text, ensure_ascii=False)


def _tensor(kind: str, spec: TensorSpec, batch: int, labels: bool) -> str:
    dims = triton_dims(kind, spec, batch)
    fields = [f"name: {_quoted(spec.name)}", f"data_type: {triton_type(kind, spec)}"]
    if dims:
        fields.append(f"dims: [ {', '.join(str(d) for d in dims)} ]")
    else:  # one value per sample: Triton needs a dim, and reshapes it away for the model
        fields += ["dims: [ 1 ]", "reshape: { shape: [ ] }"]
    if labels:
        fields.append(f"label_filename: {_quoted(LABELS_FILE)}")
    return "  {\n" + "".join(f"    {field}\n" for field in fields) + "  }"


def _labelled(manifest: Manifest, spec: TensorSpec) -> bool:
    """Class scores (one per label) carry the labels file: Triton's classification extension reads it."""
    return manifest.task == "classification" and bool(manifest.labels) and spec.shape[-1:] == [len(manifest.labels)]


def config_pbtxt(model_name: str, manifest: Manifest, batch: int, versions: int = 1) -> str:
    """``config.pbtxt`` for the ONNX Runtime backend, in protobuf text format."""
    inputs = ",\n".join(_tensor("input", spec, batch, labels=False) for spec in manifest.inputs)
    outputs = ",\n".join(_tensor("output", spec, batch, _labelled(manifest, spec)) for spec in manifest.outputs)
    lines = [
        f"name: {_quoted(model_name)}",
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {batch}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
    ]
    if versions > 1:  # serve every version; Triton's default serves only the newest
        lines.append("version_policy: { all: { } }")
    if batch > 0:
        delay_us = round(DEFAULTS.max_batch_delay_ms * 1000)
        lines.append(
            "dynamic_batching {\n"
            f"  max_queue_delay_microseconds: {delay_us}\n"
            f"  default_queue_policy {{ max_queue_size: {DEFAULTS.max_queue} }}\n"
            "}"
        )
    return "\n".join(lines) + "\n"


def _model_folders(name: str, handed: list[Handed], as_versions: bool) -> dict[str, list[Handed]]:
    """Model name -> its versions in order (version 1, 2, ...): the variant as a model of its own by default."""
    if as_versions:
        return {name: handed}
    return {name if h.variant == BASE else f"{name}.{h.variant}": [h] for h in handed}


def write_repository(bundle: Bundle, root: Path, options: PackageOptions) -> list[str]:
    """Write the model repository under ``root``; returns the model names it holds."""
    manifest = bundle.manifest
    batch = max_batch_size(options)
    models = _model_folders(manifest.name, handed_artifacts(bundle, options), options.variant_as_version)
    for model_name, versions in models.items():
        folder = root / model_name
        config = config_pbtxt(model_name, manifest, batch, len(versions))  # refuses before any file is copied
        for number, handed in enumerate(versions, start=1):
            copy_verified(bundle, handed.artifact, folder / str(number) / "model.onnx")
        (folder / "config.pbtxt").write_text(config)
        if any(_labelled(manifest, spec) for spec in manifest.outputs):
            (folder / LABELS_FILE).write_text("".join(f"{label}\n" for label in manifest.labels))
    return list(models)


def write_triton(bundle: Bundle, out: Path, options: PackageOptions) -> None:
    models = write_repository(bundle, out, options)
    (out / "README.md").write_text(triton_readme(bundle.manifest, models, options, max_batch_size(options)))
