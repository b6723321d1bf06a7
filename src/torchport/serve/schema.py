"""The Open Inference Protocol v2 REST wire format, written once as pydantic models.

What the models are for: the OpenAPI document (:mod:`torchport.serve.openapi` and the FastAPI routes) is generated
from them, the metadata and health routes build their bodies with them, and the tests check the parser and the
encoder of :mod:`torchport.serve.protocol` against them.

What they are not for: validating each ``/infer`` body at run time. The parser keeps its hand-written checks, which
are the models' rules in code (tests/serve/test_serve_schema.py holds them to it): they reject in the order a caller
finds most useful (the unknown tensor name before its shape), name the tensor at fault in messages that clients and
tests rely on, read binary bodies the models cannot see, and cost nothing on top of parsing, where running the
models over every body would add measurable time per request (the lean infer path is the point of the server).

The request models accept exactly the structure the server accepts (strict types: no ``"5"`` for ``5``, no
``true`` for ``1``; ``null`` only where the parser takes it as absent); what only the served model decides (names,
shapes, the datatype of each tensor, value counts) is the parser's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the tensor datatypes this server reads and writes (v2 names)
Datatype = Literal["FP32", "FP16", "INT64", "INT32", "UINT8"]
#: protocol extensions the server announces in its metadata
EXTENSIONS = ["binary_tensor_data"]


class _Request(BaseModel):
    """A part of a request: strict types, unknown keys ignored (the parser never reads them)."""

    model_config = ConfigDict(strict=True)


class _Parameters(BaseModel):
    """v2 ``parameters`` objects are open: keys other than the ones named here pass through unread."""

    model_config = ConfigDict(strict=True, extra="allow")


class InputParameters(_Parameters):
    binary_data_size: int | None = Field(
        default=None,
        ge=0,
        description="binary tensor extension: the tensor's raw little-endian bytes follow the JSON header",
    )


class RequestInput(_Request):
    name: str
    shape: list[int] = Field(description="the batch dimension is at least 1; the others as in the model's metadata")
    datatype: Datatype
    parameters: InputParameters = Field(default_factory=InputParameters)
    data: list[Any] = Field(
        default_factory=list, description="the values, row-major, flat or nested; absent with binary_data_size"
    )

    @model_validator(mode="after")
    def _data_or_binary(self) -> RequestInput:
        has_binary = self.parameters.binary_data_size is not None
        if has_binary == ("data" in self.model_fields_set):
            raise ValueError("give exactly one of 'data' and parameters.binary_data_size")
        return self


class OutputParameters(_Parameters):
    binary_data: bool = Field(default=False, description="absent: the request's parameters.binary_data_output")


class RequestOutput(_Request):
    name: str
    parameters: OutputParameters = Field(default_factory=OutputParameters)


class RequestParameters(_Parameters):
    binary_data_output: bool = Field(default=False, description="the default of every output's binary_data")


class InferenceRequest(_Request):
    """The JSON of an infer request body (binary tensor extension: its first Inference-Header-Content-Length bytes)."""

    id: str | None = None
    parameters: RequestParameters = Field(default_factory=RequestParameters)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(default=None, description="absent: every output, in model order")


class _Response(BaseModel):
    """A part of a response: nothing beyond what the protocol defines."""

    model_config = ConfigDict(extra="forbid")


class ResponseParameters(_Response):
    binary_data_size: int = Field(ge=0, description="the tensor's bytes, after the JSON header, in output order")


class ResponseOutput(_Response):
    name: str
    datatype: Datatype
    shape: list[int]
    parameters: ResponseParameters | None = None
    data: list[Any] | None = Field(default=None, description="the values, flat, row-major")


class InferenceResponse(_Response):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(_Response):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 is the dynamic batch dimension")


class ModelMetadata(_Response):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = Field(
        default=None, description="tabular models: raw_columns, the table columns a request may give instead of inputs"
    )


class ServerMetadata(_Response):
    name: str
    version: str
    extensions: list[str]


class Live(_Response):
    live: bool


class Ready(_Response):
    name: str | None = None
    ready: bool
    error: str | None = None


class ErrorBody(_Response):
    error: str
