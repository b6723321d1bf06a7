"""The Open Inference Protocol v2 gRPC messages to and from what the server works with: ``ModelInferRequest`` to a
validated :class:`~torchport.serve.protocol.ParsedRequest`, results to ``ModelInferResponse``, metadata to its reply.

Pure functions over the messages of ``proto/grpc_predict_v2.proto``, no gRPC server. Every check that REST makes
is the same function here (:mod:`torchport.serve.protocol`), so a request refused over both protocols is refused
with the same one-line message; only where the values travel differs: in ``raw_input_contents`` (one entry per
input, in order) or in each input's typed ``contents`` field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torchport.bundle.manifest import TableColumn, TensorSpec
from torchport.errors import DataError
from torchport.serve import rows
from torchport.serve.protocol import (
    NUMPY,
    ParsedRequest,
    ProtocolError,
    array_from_bytes,
    array_from_values,
    batch_size,
    check_finite,
    check_tensor,
    input_spec,
    missing_inputs,
    output_arrays,
    requested_outputs,
)
from torchport.serve.schema import ModelMetadata
from torchport.tabular import encode_rows

#: v2 datatype -> the InferTensorContents field its values travel in (FP16 has none: it travels raw)
TYPED_FIELDS = {"FP32": "fp32_contents", "INT64": "int64_contents", "INT32": "int_contents", "UINT8": "uint_contents"}
#: raw column datatype -> the InferTensorContents field its values travel in
COLUMN_FIELDS = {
    "BYTES": "bytes_contents",
    "BOOL": "bool_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
#: every field of InferTensorContents, to name one given for the wrong datatype
CONTENT_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)


def parse_grpc_request(
    request: Any, inputs: list[TensorSpec], outputs: list[TensorSpec], columns: Sequence[TableColumn] = ()
) -> ParsedRequest:
    """Validate a ``ModelInferRequest`` against the model's tensor specs; ProtocolError on the first fault."""
    tensors = request.inputs
    if not tensors:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise ProtocolError(
            f"raw_input_contents holds {len(raw)} tensors but 'inputs' lists {len(tensors)}; give one per input, "
            "in the order of 'inputs'"
        )
    if rows.takes_rows(tensors, inputs, columns):
        arrays = _column_arrays(tensors, raw, inputs[0], columns)
    else:
        arrays = _graph_arrays(tensors, raw, inputs)
    requested = [{"name": o.name, "parameters": _parameters(o.parameters)} for o in request.outputs]
    return ParsedRequest(
        inputs=arrays,
        batch=batch_size(arrays, inputs),
        outputs=requested_outputs(requested or None, True, outputs),
        id=request.id or None,
    )


def _column_arrays(tensors: Any, raw: Any, graph: TensorSpec, columns: Sequence[TableColumn]) -> dict[str, np.ndarray]:
    """Raw table columns (see serve/rows.py), encoded into the graph input as training encoded its rows."""
    values: dict[str, np.ndarray] = {}
    try:
        for index, tensor in enumerate(tensors):
            name, datatype = tensor.name, tensor.datatype
            _, count = rows.check_column(name, datatype, list(tensor.shape), columns, values)
            if raw:
                values[name] = rows.values_from_bytes(name, raw[index], datatype, count)
            else:
                contents = getattr(tensor.contents, COLUMN_FIELDS[datatype])
                values[name] = rows.values_from_list(name, list(contents), datatype, count)
        return {graph.name: encode_rows(values, columns)}
    except DataError as exc:
        raise ProtocolError(str(exc)) from None


def _graph_arrays(tensors: Any, raw: Any, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The graph inputs, each checked against its spec."""
    specs = {spec.name: spec for spec in inputs}
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        spec = input_spec(tensor.name, specs, arrays)
        shape = check_tensor(spec, tensor.datatype, list(tensor.shape))
        datatype = tensor.datatype
        if raw:
            if tensor.HasField("contents"):
                raise ProtocolError(
                    f"input '{spec.name}': give its values in contents or in raw_input_contents, not both"
                )
            array = array_from_bytes(spec.name, raw[index], shape, datatype, f"raw_input_contents[{index}]")
        else:
            array = _typed_array(tensor, spec.name, shape, datatype)
        check_finite(spec.name, array, datatype)
        arrays[spec.name] = array
    missing_inputs(specs, arrays)
    return arrays


def _typed_array(tensor: Any, name: str, shape: list[int], datatype: str) -> np.ndarray:
    """An input's values from its typed contents field, the one its datatype names and no other."""
    field = TYPED_FIELDS.get(datatype)
    if not tensor.HasField("contents"):
        raise ProtocolError(f"input '{name}': neither contents nor raw_input_contents carries its values")
    contents = tensor.contents
    wrong = [other for other in CONTENT_FIELDS if other != field and len(getattr(contents, other))]
    if field is None:
        raise ProtocolError(f"input '{name}': {datatype} travels only in raw_input_contents (it has no typed field)")
    if wrong:
        raise ProtocolError(f"input '{name}': datatype {datatype} takes contents.{field}, not contents.{wrong[0]}")
    values = getattr(contents, field)
    source = np.dtype(NUMPY[datatype]) if datatype != "UINT8" else np.dtype(np.uint32)
    return array_from_values(name, np.array(values, dtype=source), shape, datatype, f"contents.{field}")


def _parameters(parameters: Any) -> dict[str, Any]:
    """An ``InferParameter`` map as plain values (what the REST parser reads from JSON)."""
    return {
        key: getattr(value, value.WhichOneof("parameter_choice") or "bool_param") for key, value in parameters.items()
    }


def infer_response(
    messages: Any,
    model_name: str,
    model_version: str,
    request: ParsedRequest,
    results: dict[str, np.ndarray],
    outputs: list[TensorSpec],
) -> Any:
    """The ``ModelInferResponse``: every requested output in ``raw_output_contents``, as Triton answers."""
    response = messages.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id or "")
    for name, datatype, array, _ in output_arrays(request, results, outputs):
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response


def metadata_response(messages: Any, metadata: ModelMetadata) -> Any:
    """The ``ModelMetadataResponse`` of the REST metadata document (one source for both protocols)."""
    tensor = messages.ModelMetadataResponse.TensorMetadata
    return messages.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
    )
