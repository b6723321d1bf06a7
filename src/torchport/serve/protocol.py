"""The Open Inference Protocol v2 wire format: parsing and validating requests, encoding responses.

Pure functions over bytes and NumPy arrays, no web framework: the JSON tensor form (``data`` flattened or nested,
row-major) and Triton's ``binary_tensor_data`` extension (a JSON header of ``Inference-Header-Content-Length``
bytes followed by the raw little-endian tensors, in input order, each sized by ``parameters.binary_data_size``).
Every rejection is a :class:`ProtocolError` with the HTTP status and a message that names the tensor. The
structure read and written is the one :mod:`torchport.serve.schema` describes. The per-tensor checks
(:func:`input_spec`, :func:`check_tensor`, :func:`array_from_values`, :func:`array_from_bytes`, ...) are public:
the gRPC codec (:mod:`torchport.serve.grpc_codec`) runs the same ones, so both protocols refuse alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from torchport.bundle.manifest import DTYPES, TableColumn, TensorSpec
from torchport.errors import DataError
from torchport.serve import rows
from torchport.serve.schema import Datatype, TensorMetadata

#: manifest dtype -> v2 datatype
DATATYPES: dict[str, Datatype] = {
    "float32": "FP32",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "uint8": "UINT8",
}
#: v2 datatype -> little-endian NumPy dtype
NUMPY: dict[str, np.dtype[Any]] = {DATATYPES[dtype]: np.dtype(numpy) for dtype, numpy in DTYPES.items()}
HEADER_LENGTH = "inference-header-content-length"


class ProtocolError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, the message goes into ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def spec_shape(spec: TensorSpec) -> list[int]:
    """The v2 metadata shape: the dynamic batch axis is -1."""
    return [-1 if dim == "batch" else int(dim) for dim in spec.shape]


def tensor_metadata(spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=spec.name, datatype=DATATYPES[spec.dtype], shape=spec_shape(spec))


@dataclass
class ParsedRequest:
    """A validated request: arrays in the manifest's dtypes and shapes, ready for the batcher."""

    inputs: dict[str, np.ndarray]
    batch: int
    outputs: list[tuple[str, bool]]  # (output name, as binary) in response order
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is not None:
        try:
            length = int(header_length.strip())
        except ValueError:
            raise ProtocolError(f"Inference-Header-Content-Length '{header_length[:40]}' is not an integer") from None
        if length < 0 or length > len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length is {length} but the body holds only {len(body)} bytes"
            )
    else:
        length = len(body)
    if length == 0:
        raise ProtocolError("the request body is empty; expected a JSON inference request")
    try:
        header = _loads(body[:length])
    except UnicodeDecodeError:
        raise ProtocolError("the request header is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"the request is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ProtocolError("the request JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"the request must be a JSON object, not {type(header).__name__}")
    return header, memoryview(body)[length:]


def _loads(text: bytes) -> Any:
    """orjson (about 10x faster); what it refuses goes to the standard library, whose messages the errors quote
    and which also reads NaN, Infinity and lone surrogates (validation then names the tensor at fault)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _check_shape(name: str, shape: Any, spec: TensorSpec) -> list[int]:
    if not isinstance(shape, list) or not all(_is_int(dim) for dim in shape):
        raise ProtocolError(f"input '{name}': 'shape' must be a list of integers")
    expected = spec_shape(spec)
    if len(shape) != len(expected):
        raise ProtocolError(f"input '{name}': shape {shape} has rank {len(shape)}, the model expects {expected}")
    for axis, (got, want) in enumerate(zip(shape, expected, strict=True)):
        if want == -1:
            if got < 1:
                raise ProtocolError(f"input '{name}': batch dimension {got} must be at least 1")
        elif got != want:
            raise ProtocolError(
                f"input '{name}': dimension {axis} is {got}, the model expects {want} (shape {expected})"
            )
    return shape


def array_from_values(name: str, data: Any, shape: list[int], datatype: str, field: str = "'data'") -> np.ndarray:
    """The tensor from its values: a JSON array (flat or nested) or, over gRPC, a typed contents field as an array;
    ``field`` names where they came from in the messages."""
    if not isinstance(data, list | np.ndarray):
        raise ProtocolError(f"input '{name}': {field} must be a JSON array of numbers")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ProtocolError(f"input '{name}': {field} is not a regular array of numbers") from None
    count = math.prod(shape)
    is_float = datatype.startswith("FP")
    allowed = "iuf" if is_float else "iu"
    if array.size and array.dtype.kind not in allowed:
        kind = "numbers" if is_float else "integers"
        raise ProtocolError(f"input '{name}': {field} must hold only {kind} for datatype {datatype}")
    if array.size != count:
        raise ProtocolError(f"input '{name}': {field} holds {array.size} values, shape {shape} needs {count}")
    target = NUMPY[datatype]
    if not is_float:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise ProtocolError(f"input '{name}': a value is out of range for {datatype}")
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target).reshape(shape)


def array_from_bytes(
    name: str, chunk: memoryview | bytes, shape: list[int], datatype: str, field: str = "binary data"
) -> np.ndarray:
    """The tensor from its raw little-endian bytes (the binary extension, or gRPC's raw_input_contents)."""
    dtype = NUMPY[datatype]
    need = math.prod(shape) * dtype.itemsize
    if len(chunk) != need:
        raise ProtocolError(f"input '{name}': {field} holds {len(chunk)} bytes, shape {shape} {datatype} needs {need}")
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    if array.ctypes.data % dtype.alignment:
        array = array.copy()
    return array


def parse_infer_request(
    body: bytes,
    header_length: str | None,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    columns: Sequence[TableColumn] = (),
) -> ParsedRequest:
    """Parse and validate one ``/infer`` body against the model's tensor specs; ProtocolError on any fault.

    The structure accepted is :class:`~torchport.serve.schema.InferenceRequest`'s, checked by hand (see that
    module for why); the checks run in the order of the body, so the first fault a caller made is the one named."""
    header, binary = _parse_header(body, header_length)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    parameters = header.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    if rows.takes_rows(raw_inputs, inputs, columns):  # raw table columns instead of the graph input
        try:
            arrays = rows.read_rest_columns(raw_inputs, binary, inputs[0], columns)
        except DataError as exc:
            raise ProtocolError(str(exc)) from None
    else:
        arrays = _read_inputs(raw_inputs, binary, inputs)
    return ParsedRequest(
        inputs=arrays,
        batch=batch_size(arrays, inputs),
        outputs=_rest_outputs(header, parameters, outputs),
        id=request_id,
        parameters=parameters,
    )


def _read_inputs(raw_inputs: list[Any], binary: memoryview, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Every input tensor as an array; binary tensors take their bytes from ``binary`` in input order."""
    specs = {spec.name: spec for spec in inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for index, item in enumerate(raw_inputs):
        spec = _input_spec(index, item, specs, arrays)
        arrays[spec.name], offset = _read_input(item, spec, binary, offset)
    if offset != len(binary):
        raise ProtocolError(f"the body has {len(binary) - offset} bytes of binary data that no input claims")
    missing_inputs(specs, arrays)
    return arrays


def _input_spec(index: int, item: Any, specs: dict[str, TensorSpec], seen: dict[str, np.ndarray]) -> TensorSpec:
    if not isinstance(item, dict):
        raise ProtocolError(f"inputs[{index}] must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"inputs[{index}]: 'name' must be a string")
    return input_spec(name, specs, seen)


def input_spec(name: str, specs: dict[str, TensorSpec], seen: dict[str, np.ndarray]) -> TensorSpec:
    """The spec of the input ``name``, refused when the model has no such input or it came already."""
    spec = specs.get(name)
    if spec is None:
        raise ProtocolError(f"unknown input '{name[:80]}'; the model's inputs are {sorted(specs)}")
    if name in seen:
        raise ProtocolError(f"input '{name}' is given more than once")
    return spec


def _read_input(item: dict[str, Any], spec: TensorSpec, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """One input's array, and the offset of the next binary tensor."""
    name = spec.name
    expected_type = DATATYPES[spec.dtype]
    shape = check_tensor(spec, item.get("datatype"), item.get("shape"))
    item_parameters = item.get("parameters", {})
    if not isinstance(item_parameters, dict):
        raise ProtocolError(f"input '{name}': 'parameters' must be a JSON object")
    size = item_parameters.get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise ProtocolError(f"input '{name}': give either 'data' or binary_data_size, not both")
        if not _is_int(size) or size < 0:
            raise ProtocolError(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise ProtocolError(
                f"input '{name}': binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} bytes left); the binary data is truncated"
            )
        array = array_from_bytes(name, binary[offset : offset + size], shape, expected_type)
        offset += size
    elif "data" in item:
        array = array_from_values(name, item["data"], shape, expected_type)
    else:
        raise ProtocolError(f"input '{name}': neither 'data' nor parameters.binary_data_size is given")
    check_finite(name, array, expected_type)
    return array, offset


def check_tensor(spec: TensorSpec, datatype: Any, shape: Any) -> list[int]:
    """The input's shape, once its datatype and shape are the model's (whatever carries its values)."""
    expected_type = DATATYPES[spec.dtype]
    if datatype != expected_type:
        message = f"datatype {str(datatype)[:20]} does not match the model's {expected_type}"
        raise ProtocolError(f"input '{spec.name}': {message}")
    return _check_shape(spec.name, shape, spec)


def check_finite(name: str, array: np.ndarray, datatype: str) -> None:
    if datatype.startswith("FP") and not np.isfinite(array).all():
        raise ProtocolError(f"input '{name}': contains NaN or Inf (or a value out of {datatype} range)")


def missing_inputs(specs: dict[str, TensorSpec], arrays: dict[str, np.ndarray]) -> None:
    missing = [name for name in specs if name not in arrays]
    if missing:
        raise ProtocolError(f"missing input(s) {missing}; the model needs {list(specs)}")


def batch_size(arrays: dict[str, np.ndarray], inputs: list[TensorSpec]) -> int:
    batches = {int(arrays[spec.name].shape[0]) for spec in inputs if spec.shape[:1] == ["batch"]}
    if len(batches) > 1:
        raise ProtocolError(f"the inputs disagree on the batch size: {sorted(batches)}")
    return batches.pop() if batches else 1


def _rest_outputs(
    header: dict[str, Any], parameters: dict[str, Any], outputs: list[TensorSpec]
) -> list[tuple[str, bool]]:
    default_binary = parameters.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise ProtocolError("parameters.binary_data_output must be true or false")
    return requested_outputs(header.get("outputs"), default_binary, outputs)


def requested_outputs(requested: Any, default_binary: bool, outputs: list[TensorSpec]) -> list[tuple[str, bool]]:
    """(output name, as binary) in response order: every output when none is requested, else the requested ones,
    each an object ``{"name": ..., "parameters": {...}}``."""
    if requested is None:
        return [(spec.name, default_binary) for spec in outputs]
    if not isinstance(requested, list):
        raise ProtocolError("'outputs' must be a list of requested outputs")
    known = {spec.name for spec in outputs}
    result: list[tuple[str, bool]] = []
    for index, item in enumerate(requested):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"outputs[{index}] must be an object with a string 'name'")
        name = item["name"]
        if name not in known:
            raise ProtocolError(f"unknown output '{name[:80]}'; the model's outputs are {sorted(known)}")
        if any(name == seen for seen, _ in result):
            raise ProtocolError(f"output '{name}' is requested more than once")
        item_parameters = item.get("parameters", {})
        if not isinstance(item_parameters, dict):
            raise ProtocolError(f"output '{name}': 'parameters' must be a JSON object")
        if "classification" in item_parameters:
            raise ProtocolError(f"output '{name}': the classification extension is not supported")
        binary = item_parameters.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise ProtocolError(f"output '{name}': parameters.binary_data must be true or false")
        result.append((name, binary))
    return result


def encode_response(
    model_name: str,
    model_version: str,
    request: ParsedRequest,
    results: dict[str, np.ndarray],
    outputs: list[TensorSpec],
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers; binary outputs follow the JSON header as raw little-endian bytes."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    finite = True  # every output written as JSON numbers is finite
    for name, datatype, array, binary in output_arrays(request, results, outputs):
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
            finite = finite and (array.dtype.kind != "f" or bool(np.isfinite(array).all()))
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = entries
    header = _dumps(document, finite)
    if not blobs:
        return header, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    return b"".join([header, *blobs]), headers


def output_arrays(
    request: ParsedRequest, results: dict[str, np.ndarray], outputs: list[TensorSpec]
) -> list[tuple[str, str, np.ndarray, bool]]:
    """(name, v2 datatype, C-contiguous array in that datatype, as binary) of each requested output, in order."""
    datatypes = {spec.name: DATATYPES[spec.dtype] for spec in outputs}
    arrays: list[tuple[str, str, np.ndarray, bool]] = []
    for name, binary in request.outputs:
        datatype = datatypes[name]
        arrays.append((name, datatype, np.ascontiguousarray(results[name], dtype=NUMPY[datatype]), binary))
    return arrays


def _dumps(document: dict[str, Any], finite: bool) -> bytes:
    """orjson for speed; the standard library where orjson would change the answer: it writes NaN/Infinity as
    null (the stdlib keeps NaN and Infinity, as before), and refuses strings a client may send, such as an ``id``
    holding a lone surrogate (the stdlib escapes it)."""
    if finite:
        try:
            return orjson.dumps(document)
        except TypeError:
            pass
    return json.dumps(document, separators=(",", ":")).encode()
