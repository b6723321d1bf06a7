"""The v2 wire format without a server: parsing, validation messages, binary framing, encoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torchport.bundle.manifest import TensorSpec
from torchport.serve.protocol import ProtocolError, encode_response, parse_infer_request
from torchport.serve.schema import (
    InferenceRequest,
    InferenceResponse,
    InputParameters,
    OutputParameters,
    RequestInput,
    RequestOutput,
    ResponseParameters,
)

INPUTS = [TensorSpec(name="input", dtype="float32", shape=["batch", 1, 8, 8])]
OUTPUTS = [
    TensorSpec(name="logits", dtype="float32", shape=["batch", 10]),
    TensorSpec(name="probabilities", dtype="float32", shape=["batch", 10]),
]


def request(**tensor: object) -> bytes:
    base: dict[str, object] = {"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 128}
    return json.dumps({"inputs": [{**base, **tensor}]}).encode()


def test_json_request_parses_flat_and_nested() -> None:
    flat = parse_infer_request(request(), None, INPUTS, OUTPUTS)
    nested = parse_infer_request(request(data=np.full((2, 1, 8, 8), 0.5).tolist()), None, INPUTS, OUTPUTS)
    assert flat.batch == nested.batch == 2
    assert flat.inputs["input"].dtype == np.float32 and flat.inputs["input"].shape == (2, 1, 8, 8)
    assert [name for name, _ in flat.outputs] == ["logits", "probabilities"]


def test_binary_request_and_response_round_trip() -> None:
    array = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    request = InferenceRequest(
        id="7",
        inputs=[
            RequestInput(
                name="input", shape=[1, 1, 8, 8], datatype="FP32", parameters=InputParameters(binary_data_size=256)
            )
        ],
        outputs=[RequestOutput(name="probabilities", parameters=OutputParameters(binary_data=True))],
    )
    header = request.model_dump_json(exclude_unset=True).encode()
    parsed = parse_infer_request(header + array.tobytes(), str(len(header)), INPUTS, OUTPUTS)
    np.testing.assert_array_equal(parsed.inputs["input"], array)
    probabilities = np.full((1, 10), 0.1, dtype=np.float32)
    body, headers = encode_response("digits", "1", parsed, {"probabilities": probabilities}, OUTPUTS)
    length = int(headers["inference-header-content-length"])
    response = InferenceResponse.model_validate_json(body[:length])
    assert response.id == "7" and response.outputs[0].parameters == ResponseParameters(binary_data_size=40)
    np.testing.assert_array_equal(np.frombuffer(body[length:], dtype="<f4").reshape(1, 10), probabilities)


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (request(name="pixels"), None, "unknown input 'pixels'"),
        (request(datatype="FP64"), None, "input 'input': datatype FP64"),
        (request(shape=[2, 64]), None, "rank 2"),
        (request(shape=[2, 1, 8, 9], data=[0.0] * 144), None, "dimension 3 is 9"),
        (request(data=[0.5] * 127), None, "holds 127 values"),
        (request(data=[float("nan")] * 128), None, "NaN or Inf"),
        (request(data=[1e39] * 128), None, "NaN or Inf"),
        (request(data=["1"] * 128), None, "only numbers"),
        (request(shape=[0, 1, 8, 8], data=[]), None, "at least 1"),
        (request(), "99999", "body holds only"),
    ],
)
def test_rejections_name_the_tensor(body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as caught:
        parse_infer_request(body, header_length, INPUTS, OUTPUTS)
    assert caught.value.status == 400


def test_non_finite_outputs_and_odd_ids_are_encoded_as_the_standard_library_would() -> None:
    """The fast JSON encoder would write NaN as null and refuse a lone surrogate: neither may change an answer."""
    parsed = parse_infer_request(
        json.dumps({"id": "\ud800", "inputs": json.loads(request())["inputs"]}).encode(), None, INPUTS, OUTPUTS
    )
    logits = np.array([[np.nan, np.inf, -np.inf, 1.0, 0, 0, 0, 0, 0, 0]] * 2, dtype=np.float32)
    body, headers = encode_response("digits", "1", parsed, {"logits": logits, "probabilities": logits}, OUTPUTS)
    document = json.loads(body)  # Python's json reads NaN/Infinity back
    assert headers["content-type"] == "application/json" and document["id"] == "\ud800"
    assert np.isnan(document["outputs"][0]["data"][0]) and document["outputs"][0]["data"][1:3] == [np.inf, -np.inf]
