"""The v2 gRPC messages without a server: our .proto against the descriptors tritonclient ships, and gRPC requests
validated by the same checks, with the same messages, as REST bodies."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from torchport.bundle.manifest import TensorSpec
from torchport.serve.grpc_codec import infer_response, parse_grpc_request
from torchport.serve.grpc_proto import METHODS, SERVICE, messages
from torchport.serve.protocol import ProtocolError, parse_infer_request

INPUTS = [TensorSpec(name="input", dtype="float32", shape=["batch", 1, 8, 8])]
OUTPUTS = [
    TensorSpec(name="logits", dtype="float32", shape=["batch", 10]),
    TensorSpec(name="probabilities", dtype="float32", shape=["batch", 10]),
]


def triton_descriptors() -> Any:
    """The file descriptor of Triton's grpc_service.proto, as tritonclient.grpc ships it (compiled)."""
    from tritonclient.grpc import service_pb2

    return service_pb2.DESCRIPTOR


def field_signature(message: Any) -> dict[str, tuple[int, int, bool, str]]:
    """Every field of a message descriptor: (number, type, repeated, message type's name), by name."""
    return {
        field.name: (
            field.number,
            field.type,
            field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED,
            field.message_type.full_name if field.message_type else "",
        )
        for field in message.fields
    }


def all_messages(file: Any) -> dict[str, Any]:
    """Every message of a file descriptor, nested ones too, by full name."""
    found = {}
    for message in file.message_types_by_name.values():
        found[message.full_name] = message
        found.update(_nested(message))
    return found


def _nested(message: Any) -> dict[str, Any]:
    found = {}
    for nested in message.nested_types:
        found[nested.full_name] = nested
        found.update(_nested(nested))
    return found


def test_every_field_number_and_type_matches_tritonclients_grpc_service_proto() -> None:
    ours = all_messages(messages().file)
    triton = all_messages(triton_descriptors())
    assert len(ours) >= 20
    for name, message in ours.items():
        assert name in triton, f"{name} is not in Triton's grpc_service.proto"
        ours_fields, triton_fields = field_signature(message), field_signature(triton[name])
        for field, signature in ours_fields.items():
            assert triton_fields.get(field) == signature, f"{name}.{field}: {signature} != {triton_fields.get(field)}"
    spec = {"ModelInferRequest": 7, "ModelInferResponse": 6, "InferTensorContents": 8}  # fields the spec defines
    for name, count in spec.items():
        assert len(ours[f"inference.{name}"].fields) == count


def test_every_method_of_the_service_matches_tritonclients() -> None:
    ours = messages().file.services_by_name[SERVICE.rpartition(".")[2]]
    triton = triton_descriptors().services_by_name["GRPCInferenceService"]
    assert set(ours.methods_by_name) == set(METHODS)
    for name, method in ours.methods_by_name.items():
        theirs = triton.methods_by_name[name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            theirs.input_type.full_name,
            theirs.output_type.full_name,
        )
        assert not method.client_streaming and not method.server_streaming


def test_our_messages_and_tritonclients_read_each_others_bytes() -> None:
    from tritonclient.grpc import service_pb2

    theirs = service_pb2.ModelInferRequest(model_name="digits", id="7")
    tensor = theirs.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    tensor.parameters["x"].int64_param = 3
    theirs.raw_input_contents.append(np.arange(64, dtype="<f4").tobytes())
    ours = messages().ModelInferRequest.FromString(theirs.SerializeToString())
    assert ours.inputs[0].parameters["x"].int64_param == 3
    parsed = parse_grpc_request(ours, INPUTS, OUTPUTS)
    np.testing.assert_array_equal(parsed.inputs["input"].ravel(), np.arange(64, dtype=np.float32))
    results = {"logits": np.ones((1, 10), np.float32), "probabilities": np.full((1, 10), 0.1, np.float32)}
    answer = infer_response(messages(), "digits", "1", parsed, results, OUTPUTS)
    decoded = service_pb2.ModelInferResponse.FromString(answer.SerializeToString())
    assert decoded.id == "7" and [o.name for o in decoded.outputs] == ["logits", "probabilities"]
    np.testing.assert_array_equal(np.frombuffer(decoded.raw_output_contents[1], "<f4"), results["probabilities"][0])


# --- requests: raw and typed contents, refused as REST refuses --------------------------------------------------


def grpc_request(
    name: str = "input", datatype: str = "FP32", shape: tuple[int, ...] = (2, 1, 8, 8), raw: bool = True
) -> Any:
    array = np.full(shape, 0.5, dtype=np.float32)
    request = messages().ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw:
        request.raw_input_contents.append(array.tobytes())
    else:
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    return request


def rest_request(name: str = "input", datatype: str = "FP32", shape: tuple[int, ...] = (2, 1, 8, 8)) -> bytes:
    data = np.full(shape, 0.5).ravel().tolist()
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "data": data}]}).encode()


def refusal(parse: Any) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse()
    assert caught.value.status == 400
    return caught.value.message


@pytest.mark.parametrize("raw", [True, False], ids=["raw_input_contents", "fp32_contents"])
def test_raw_and_typed_contents_parse_to_the_same_arrays_as_rest(raw: bool) -> None:
    parsed = parse_grpc_request(grpc_request(raw=raw), INPUTS, OUTPUTS)
    rest = parse_infer_request(rest_request(), None, INPUTS, OUTPUTS)
    assert parsed.batch == rest.batch == 2
    np.testing.assert_array_equal(parsed.inputs["input"], rest.inputs["input"])
    assert parsed.inputs["input"].dtype == np.float32
    assert [name for name, _ in parsed.outputs] == ["logits", "probabilities"]


@pytest.mark.parametrize(
    "fault",
    [{"name": "nope"}, {"datatype": "INT64"}, {"shape": (2, 1, 8)}, {"shape": (2, 1, 8, 9)}, {"shape": (0, 1, 8, 8)}],
    ids=["unknown input", "wrong datatype", "wrong rank", "wrong dimension", "empty batch"],
)
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_a_fault_gets_the_same_message_over_grpc_as_over_rest(fault: dict[str, Any], raw: bool) -> None:
    message = refusal(lambda: parse_grpc_request(grpc_request(raw=raw, **fault), INPUTS, OUTPUTS))
    assert message == refusal(lambda: parse_infer_request(rest_request(**fault), None, INPUTS, OUTPUTS))
    assert "\n" not in message


def test_grpc_only_faults_name_the_field() -> None:
    request = grpc_request(raw=False)
    request.inputs[0].contents.int64_contents.append(1)
    assert "takes contents.fp32_contents, not contents.int64_contents" in refusal(
        lambda: parse_grpc_request(request, INPUTS, OUTPUTS)
    )
    short = grpc_request(shape=(2, 1, 8, 8))
    short.raw_input_contents[0] = b"\0" * 12
    assert "raw_input_contents[0] holds 12 bytes" in refusal(lambda: parse_grpc_request(short, INPUTS, OUTPUTS))
    both = grpc_request()
    both.inputs[0].contents.fp32_contents.append(1.0)
    assert "not both" in refusal(lambda: parse_grpc_request(both, INPUTS, OUTPUTS))
    extra = grpc_request()
    extra.raw_input_contents.append(b"")
    assert "raw_input_contents holds 2 tensors" in refusal(lambda: parse_grpc_request(extra, INPUTS, OUTPUTS))
    few = grpc_request(raw=False)
    del few.inputs[0].contents.fp32_contents[-1]
    assert "contents.fp32_contents holds 127 values" in refusal(lambda: parse_grpc_request(few, INPUTS, OUTPUTS))
    empty = messages().ModelInferRequest(model_name="digits")
    assert "'inputs'" in refusal(lambda: parse_grpc_request(empty, INPUTS, OUTPUTS))
    bare = grpc_request(raw=False)
    bare.inputs[0].ClearField("contents")
    assert "neither contents nor raw_input_contents" in refusal(lambda: parse_grpc_request(bare, INPUTS, OUTPUTS))


def test_nan_unknown_outputs_and_classification_are_refused_as_over_rest() -> None:
    nan = grpc_request(raw=False)
    nan.inputs[0].contents.fp32_contents[3] = float("nan")
    assert "NaN or Inf" in refusal(lambda: parse_grpc_request(nan, INPUTS, OUTPUTS))
    unknown = grpc_request()
    unknown.outputs.add(name="nope")
    assert "unknown output 'nope'" in refusal(lambda: parse_grpc_request(unknown, INPUTS, OUTPUTS))
    classified = grpc_request()
    classified.outputs.add(name="logits").parameters["classification"].int64_param = 3
    assert "classification" in refusal(lambda: parse_grpc_request(classified, INPUTS, OUTPUTS))
    chosen = grpc_request()
    chosen.outputs.add(name="probabilities")
    assert parse_grpc_request(chosen, INPUTS, OUTPUTS).outputs == [("probabilities", True)]


def test_typed_integer_inputs_are_range_checked() -> None:
    specs = [TensorSpec(name="tokens", dtype="uint8", shape=["batch", 4])]
    request = messages().ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="tokens", datatype="UINT8", shape=[1, 4])
    tensor.contents.uint_contents.extend([1, 2, 3, 300])
    assert "out of range for UINT8" in refusal(lambda: parse_grpc_request(request, specs, OUTPUTS))
    tensor.contents.uint_contents[3] = 255
    parsed = parse_grpc_request(request, specs, OUTPUTS)
    assert parsed.inputs["tokens"].dtype == np.uint8 and parsed.inputs["tokens"].tolist() == [[1, 2, 3, 255]]
