"""The hand-written parser and encoder of serve/protocol.py held to the wire-format models of serve/schema.py.

The parser does not run the models (they would cost time on every request), so these tests are what keeps the two
one description: a request built with the models is accepted and read as they say; whatever the parser accepts,
the models accept too and read the same way; a response validates against the response model.
"""

from __future__ import annotations

import json
from typing import Any, get_args

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from torchport.bundle.manifest import TensorSpec
from torchport.serve.protocol import DATATYPES, ParsedRequest, ProtocolError, encode_response, parse_infer_request
from torchport.serve.schema import (
    Datatype,
    InferenceRequest,
    InferenceResponse,
    InputParameters,
    OutputParameters,
    RequestInput,
    RequestOutput,
    RequestParameters,
)

pytestmark = pytest.mark.timeout(120)

#: two inputs of different datatypes, so binary tensors must be cut at the right offsets
INPUTS = [
    TensorSpec(name="pixels", dtype="float32", shape=["batch", 2, 3]),
    TensorSpec(name="ids", dtype="int64", shape=["batch"]),
]
OUTPUTS = [
    TensorSpec(name="scores", dtype="float32", shape=["batch", 4]),
    TensorSpec(name="label", dtype="int32", shape=["batch"]),
]
FAST = settings(
    max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


def test_the_models_datatypes_are_the_parsers() -> None:
    assert set(get_args(Datatype)) == set(DATATYPES.values())


# --- requests built with the models ------------------------------------------------------------------------------


@st.composite
def model_requests(draw: st.DrawFn) -> tuple[InferenceRequest, bytes, dict[str, np.ndarray]]:
    """A request that fits INPUTS, built with the models: each tensor as JSON (flat or nested) or binary."""
    batch = draw(st.integers(1, 3))
    tensors: list[RequestInput] = []
    arrays: dict[str, np.ndarray] = {}
    payload = b""
    for spec in draw(st.permutations(INPUTS)):
        shape = [batch, *(int(dim) for dim in spec.shape[1:])]
        values = draw(st.lists(st.integers(-1000, 1000), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        array = np.asarray(values, dtype=spec.dtype).reshape(shape)
        arrays[spec.name] = array
        common: dict[str, Any] = {"name": spec.name, "shape": shape, "datatype": DATATYPES[spec.dtype]}
        if draw(st.booleans()):
            tensors.append(RequestInput(**common, parameters=InputParameters(binary_data_size=array.nbytes)))
            payload += array.tobytes()
        else:
            tensors.append(RequestInput(**common, data=array.tolist() if draw(st.booleans()) else values))
    fields: dict[str, Any] = {"inputs": tensors}
    if draw(st.booleans()):
        fields["id"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        fields["parameters"] = RequestParameters(binary_data_output=draw(st.booleans()))
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from([spec.name for spec in OUTPUTS]), unique=True))
        fields["outputs"] = [RequestOutput(name=name, parameters=draw(_output_parameters())) for name in names]
    return InferenceRequest(**fields), payload, arrays


def _output_parameters() -> st.SearchStrategy[OutputParameters]:
    return st.one_of(st.builds(OutputParameters), st.builds(OutputParameters, binary_data=st.booleans()))


def expected_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    """What the models say the response holds: (output, as binary) in response order."""
    default = request.parameters.binary_data_output
    if request.outputs is None:
        return [(spec.name, default) for spec in OUTPUTS]
    return [
        (output.name, output.parameters.binary_data if "binary_data" in output.parameters.model_fields_set else default)
        for output in request.outputs
    ]


@FAST
@given(model_requests())
def test_requests_built_with_the_models_are_read_as_the_models_say(
    built: tuple[InferenceRequest, bytes, dict[str, np.ndarray]],
) -> None:
    request, payload, arrays = built
    header = request.model_dump_json(exclude_unset=True).encode()
    parsed = parse_infer_request(header + payload, str(len(header)) if payload else None, INPUTS, OUTPUTS)
    assert parsed.id == request.id and parsed.outputs == expected_outputs(request)
    assert parsed.batch == len(arrays["ids"])
    for name, array in arrays.items():
        np.testing.assert_array_equal(parsed.inputs[name], array)
        assert parsed.inputs[name].dtype == array.dtype


# --- whatever the parser accepts, the models accept ----------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def _locations(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index of ``document``, bar the values inside ``data`` (the parser reads those as numbers)."""
    found: list[tuple[Any, ...]] = []
    items = (
        document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) else []
    )
    for key, value in items:
        found.append((*path, key))
        if key != "data":
            found += _locations(value, (*path, key))
    return found


#: the keys the parser reads, for mutations that add one where it may or may not belong
KEYS = ["id", "parameters", "inputs", "outputs", "name", "shape", "datatype", "data", "binary_data_size"]
KEYS += ["binary_data_output", "binary_data", "classification"]


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


@st.composite
def mutated_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON request of model_requests with one to three keys or items dropped, replaced or added."""
    request, _, _ = draw(model_requests())
    document: dict[str, Any] = json.loads(request.model_dump_json(exclude_unset=True))
    for spec in document["inputs"]:  # JSON only: the mutated document is parsed without a binary part
        if "binary_data_size" in spec.get("parameters", {}):
            del spec["parameters"]
            spec["data"] = [0] * int(np.prod(spec["shape"]))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([(), *_locations(document)]))  # () is the document itself
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        value = draw(_json | st.sampled_from(["FP32", "INT64", "scores", "pixels", 1, [1, 2, 3]]))
        target, parent = _at(document, path), _at(document, path[:-1])
        if action == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(KEYS))] = value
        elif path and action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif path:
            parent[path[-1]] = value
    return document


def _parsed(document: Any) -> ParsedRequest | None:
    try:
        return parse_infer_request(json.dumps(document).encode(), None, INPUTS, OUTPUTS)
    except ProtocolError as exc:
        assert exc.status == 400
        return None


@FAST
@given(mutated_requests())
def test_what_the_parser_accepts_the_models_accept_and_read_alike(document: dict[str, Any]) -> None:
    parsed = _parsed(document)
    if parsed is None:
        return
    try:
        request = InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise AssertionError(f"the parser accepts what the models refuse: {document}\n{exc}") from None
    assert parsed.id == request.id and parsed.outputs == expected_outputs(request)
    assert [tensor.name for tensor in request.inputs] == list(parsed.inputs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": 5}, "'id' must be a string"),
        ({"parameters": None}, "'parameters' must be a JSON object"),
        ({"parameters": {"binary_data_output": 1}}, "binary_data_output must be true or false"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"outputs": [{"name": "scores", "parameters": {"binary_data": "yes"}}]}, "binary_data must be true or false"),
        ({"outputs": [{"name": 3}]}, "outputs[0] must be an object with a string 'name'"),
    ],
)
def test_a_structure_the_models_refuse_the_parser_refuses_with_its_own_message(
    change: dict[str, Any], message: str
) -> None:
    document = {"inputs": [{"name": "pixels", "shape": [1, 2, 3], "datatype": "FP32", "data": [0] * 6}], **change}
    with pytest.raises(ValidationError):
        InferenceRequest.model_validate(document)
    with pytest.raises(ProtocolError) as caught:
        parse_infer_request(json.dumps(document).encode(), None, INPUTS[:1], OUTPUTS)
    assert message in caught.value.message


# --- responses -----------------------------------------------------------------------------------------------------


@FAST
@given(model_requests(), st.integers(0, 2**31 - 1))
def test_encoded_responses_are_what_the_response_model_describes(
    built: tuple[InferenceRequest, bytes, dict[str, np.ndarray]], seed: int
) -> None:
    request, payload, _ = built
    header = request.model_dump_json(exclude_unset=True).encode()
    parsed = parse_infer_request(header + payload, str(len(header)) if payload else None, INPUTS, OUTPUTS)
    rng = np.random.default_rng(seed)
    results = {"scores": rng.normal(size=(parsed.batch, 4)), "label": rng.integers(0, 9, parsed.batch)}
    body, headers = encode_response("m", "1", parsed, results, OUTPUTS)
    length = int(headers.get("inference-header-content-length", len(body)))
    document = json.loads(body[:length])
    response = InferenceResponse.model_validate(document)  # nothing beyond the model: extra keys are refused
    assert response.model_dump(exclude_unset=True) == document
    assert [(o.name, o.parameters is not None) for o in response.outputs] == parsed.outputs
    sizes = [o.parameters.binary_data_size for o in response.outputs if o.parameters is not None]
    assert sum(sizes) == len(body) - length
    assert headers["content-type"] == ("application/octet-stream" if sizes else "application/json")
