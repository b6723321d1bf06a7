"""Raw table rows over the v2 protocol: a request to a tabular model may name its raw columns instead of its graph
input, and they are encoded into that input, before batching, by ``torchport.tabular.encode_rows`` — the function
training encoded its own rows with, so the answer is training's.

A categorical column comes as BYTES, a numeric one as FP32, FP64, INT32, INT64 or BOOL; each of shape [N] or
[N, 1]. A request takes this form when the bundle's manifest lists ``preprocessing.columns`` and none of the
request's inputs is named as a graph input. Transport-neutral: REST and gRPC each read a column's values, this
module checks and encodes them. Faults are one-line DataErrors; both transports answer them with 400.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np

from torchport.bundle.manifest import TableColumn, TensorSpec
from torchport.errors import DataError
from torchport.tabular import encode_rows

#: v2 datatype -> little-endian NumPy dtype, for a numeric raw column
NUMERIC: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "BOOL": np.dtype("?"),
}


def takes_rows(items: Iterable[Any], inputs: list[TensorSpec], columns: Sequence[TableColumn]) -> bool:
    """Whether a request's input tensors (JSON objects over REST, messages over gRPC) give raw columns: the model
    has them, and no tensor is named as a graph input."""
    if not columns:
        return False
    names = [item.get("name") if isinstance(item, dict) else getattr(item, "name", None) for item in items]
    return not {spec.name for spec in inputs} & {name for name in names if isinstance(name, str)}


def read_rest_columns(
    items: list[Any], binary: memoryview, graph: TensorSpec, columns: Sequence[TableColumn]
) -> dict[str, np.ndarray]:
    """The graph input, encoded from a REST request's raw columns: each JSON ``data``, or binary data in the body
    after the JSON header, in the order of ``items`` (Triton's binary tensor extension)."""
    values: dict[str, np.ndarray] = {}
    offset = 0
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise DataError(f"inputs[{index}] must be a JSON object with a string 'name'")
        datatype = item.get("datatype")
        _, count = check_column(name, datatype, item.get("shape"), columns, values)
        parameters = item.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            values[name] = values_from_list(name, item.get("data"), datatype, count)
            continue
        if "data" in item:
            raise DataError(f"column '{name}': give either 'data' or binary_data_size, not both")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary) - offset:
            raise DataError(f"column '{name}': binary_data_size {size!r} is not a count of the bytes left in the body")
        values[name] = values_from_bytes(name, binary[offset : offset + size], datatype, count)
        offset += size
    if offset != len(binary):
        raise DataError(f"the body has {len(binary) - offset} bytes of binary data that no column claims")
    return {graph.name: encode_rows(values, columns)}  # refuses missing columns, unseen categories, ...


def check_column(
    name: str, datatype: Any, shape: Any, columns: Sequence[TableColumn], seen: Collection[str]
) -> tuple[TableColumn, int]:
    """The column ``name`` and its number of rows, once it is known, new, of a datatype that fits its kind, and of
    shape [N] or [N, 1]."""
    column = next((c for c in columns if c.name == name), None)
    if column is None:
        known = ", ".join(c.name for c in columns)
        raise DataError(f"unknown column '{name[:80]}'; the model takes the columns: {known} (or its graph input)")
    if name in seen:
        raise DataError(f"column '{name}' is given more than once")
    allowed = ["BYTES"] if column.kind == "categorical" else list(NUMERIC)
    if datatype not in allowed:
        raise DataError(
            f"column '{name}': datatype {str(datatype)[:20]} does not fit a {column.kind} column "
            f"(expected {' or '.join(allowed)})"
        )
    fits = isinstance(shape, list) and len(shape) in (1, 2) and shape[1:] in ([], [1])
    if not fits or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape) or shape[0] < 1:
        raise DataError(f"column '{name}': shape {shape} must be [N] or [N, 1] with N >= 1, one value per row")
    return column, int(shape[0])


def values_from_list(name: str, data: Any, datatype: str, rows: int) -> np.ndarray:
    """A column's values as a list (REST's JSON ``data``, gRPC's typed contents): text for BYTES (str or bytes),
    true/false for BOOL, whole numbers for INT32/INT64, numbers for FP32/FP64."""
    if not isinstance(data, list):
        raise DataError(f"column '{name}': give 'data' (a list of {rows} values) or parameters.binary_data_size")
    if len(data) != rows:
        raise DataError(f"column '{name}': 'data' holds {len(data)} values for {rows} rows")
    if datatype == "BYTES":
        if not all(isinstance(value, str | bytes) for value in data):
            raise DataError(f"column '{name}': BYTES 'data' must hold text, one per row")
        return np.array(data, dtype=object)
    wanted, words = {
        "BOOL": ((bool,), "true/false"),
        "FP32": ((int, float), "numbers"),
        "FP64": ((int, float), "numbers"),
    }.get(datatype, ((int,), "whole numbers"))
    if not all(isinstance(value, wanted) and (datatype == "BOOL") == isinstance(value, bool) for value in data):
        raise DataError(f"column '{name}': {datatype} 'data' must hold only {words}")
    try:
        return np.array(data, dtype=NUMERIC[datatype])
    except OverflowError:
        raise DataError(f"column '{name}': a value is out of range for {datatype}") from None


def values_from_bytes(name: str, chunk: bytes | memoryview, datatype: str, rows: int) -> np.ndarray:
    """A column's raw bytes: little-endian numbers, or for BYTES Triton's layout (per value a 4-byte little-endian
    length, then the bytes)."""
    if datatype != "BYTES":
        need = rows * NUMERIC[datatype].itemsize
        if len(chunk) != need:
            raise DataError(f"column '{name}': binary data holds {len(chunk)} bytes, {rows} {datatype} need {need}")
        return np.frombuffer(chunk, dtype=NUMERIC[datatype]).copy()
    raw, offset = bytes(chunk), 0
    values: list[bytes] = []
    while offset + 4 <= len(raw) and len(values) < rows:
        (length,) = struct.unpack_from("<I", raw, offset)
        values.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    if len(values) != rows or offset != len(raw):
        raise DataError(
            f"column '{name}': binary BYTES data does not hold {rows} length-prefixed values "
            "(each a 4-byte little-endian length, then the bytes)"
        )
    return np.array(values, dtype=object)


def metadata_parameters(columns: Sequence[TableColumn]) -> dict[str, Any]:
    """What the model metadata adds for a tabular model: the raw columns a request may give instead of the graph
    input. ``datatype`` is the one advertised (numeric columns take FP32, INT32, INT64 and BOOL as well)."""
    return {
        "raw_columns": [
            {
                "name": column.name,
                "datatype": "BYTES" if column.kind == "categorical" else "FP64",
                "shape": [-1],
                **({"categories": list(column.categories)} if column.kind == "categorical" else {}),
            }
            for column in columns
        ]
    }
