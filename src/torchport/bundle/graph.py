"""The manifest's tensors checked against the ONNX graphs they describe, before a reader allocates from them.

Readers size buffers from the manifest (the server's warm-up batch, request validation, the runners), so a
manifest that says ``[batch, 1, 100000, 100000]`` for a graph that takes ``[batch, 1, 8, 8]`` must be refused
where the bundle is read, not discovered as a ``MemoryError``. Every ONNX artifact must agree with the manifest on
input and output names, dtypes, ranks and static dimensions. A dimension the graph leaves symbolic may be fixed by
the manifest (it narrows what the graph accepts); a ``"batch"`` axis the graph fixes is a disagreement.
"""

from __future__ import annotations

from typing import Any

from torchport.bundle.manifest import Artifact, Bundle, TensorSpec
from torchport.errors import BundleError, first_line

# reduced-precision variants may take and give float16 where the manifest (the fp32 model's contract) says float32;
# the server casts (serve/models.py)
_CASTABLE = {("float32", "float16")}


def _graph_tensors(bundle: Bundle, artifact: Artifact) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{name: onnx ValueInfo}`` of the graph's real inputs (initializers left out) and outputs."""
    import onnx

    path = bundle.verified_path(artifact)  # parse only a file whose checksum the manifest vouches for
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a protobuf decode error has many types; any of them means "not a model"
        raise BundleError(
            f"bundle file '{artifact.path}' is not a readable ONNX model: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in initializers}
    return inputs, {v.name: v for v in model.graph.output}


def _dtype_name(value: Any) -> str:
    from onnx.helper import tensor_dtype_to_np_dtype

    elem_type = value.type.tensor_type.elem_type
    try:
        return str(tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError):
        return f"ONNX type {elem_type}"


def _compare(kind: str, spec: TensorSpec, value: Any, artifact: Artifact) -> str | None:
    """What differs between the manifest's ``spec`` and the graph's tensor, in words; None when they agree."""
    where = artifact.path
    dtype = _dtype_name(value)
    if dtype != spec.dtype and not (artifact.precision == "fp16" and (spec.dtype, dtype) in _CASTABLE):
        return f"{kind} '{spec.name}': dtype {spec.dtype} in the manifest, {dtype} in {where}"
    if not value.type.tensor_type.HasField("shape"):
        return None  # the graph does not say: nothing to contradict
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(spec.shape):
        return f"{kind} '{spec.name}': rank {len(spec.shape)} in the manifest {spec.shape}, rank {len(dims)} in {where}"
    for axis, (mine, theirs) in enumerate(zip(spec.shape, dims, strict=True)):
        fixed = theirs.dim_value if theirs.HasField("dim_value") else None
        if fixed is None:
            continue
        if mine == "batch":
            return f"{kind} '{spec.name}': dim {axis} is 'batch' (dynamic) in the manifest, {where} fixes it at {fixed}"
        if mine != fixed:
            return f"{kind} '{spec.name}': dim {axis} is {mine} in the manifest, {fixed} in {where}"
    return None


def _check_artifact(bundle: Bundle, artifact: Artifact) -> None:
    graph_inputs, graph_outputs = _graph_tensors(bundle, artifact)
    manifest = bundle.manifest
    for kind, specs, graph in (("input", manifest.inputs, graph_inputs), ("output", manifest.outputs, graph_outputs)):
        for spec in specs:
            value = graph.get(spec.name)
            problem: str | None
            if value is None:
                names = ", ".join(graph) or "none"
                problem = f"{kind} '{spec.name}' of the manifest is not in {artifact.path} (its {kind}s: {names})"
            else:
                problem = _compare(kind, spec, value, artifact)
            if problem:
                raise BundleError(f"{bundle.root / 'manifest.json'}: {problem}; refusing the bundle")
        if kind == "input":  # an input the manifest does not name could never be fed; an extra output is harmless
            missing = [name for name in graph if name not in {s.name for s in specs}]
            if missing:
                raise BundleError(
                    f"{bundle.root / 'manifest.json'}: {artifact.path} takes input '{missing[0]}', which the manifest "
                    "does not describe; refusing the bundle"
                )


def check_graph(bundle: Bundle) -> None:
    """BundleError (one line, naming the tensor and what differs) unless every ONNX artifact's graph agrees with
    the manifest's inputs and outputs. ORT-format and AOTInductor files cannot be read here and are not checked."""
    for artifact in bundle.manifest.artifacts:
        if artifact.kind == "onnx":
            _check_artifact(bundle, artifact)


def verify_all(bundle: Bundle) -> None:
    """Every checksum the manifest vouches for, then its tensors against each ONNX graph: a whole-bundle check."""
    for entry in bundle.files():
        bundle.verified_path(entry)
    check_graph(bundle)
