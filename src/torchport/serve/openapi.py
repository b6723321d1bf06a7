"""The OpenAPI document, generated from the wire-format models of :mod:`torchport.serve.schema`.

FastAPI documents the routes it serves. The infer route is answered by the outer ASGI layer instead (see
:mod:`torchport.serve.app`), so :class:`ServeApp` adds its operation to FastAPI's document, with the request and
response schemas pydantic generates from :class:`InferenceRequest` and :class:`InferenceResponse`.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel

from torchport.serve.schema import ErrorBody, InferenceRequest, InferenceResponse

#: what each error status means, on every route that may answer it
ERRORS: dict[int, str] = {
    400: "bad request",
    401: "missing or wrong API key",
    404: "unknown model",
    408: "body not received in time",
    413: "body over the limit",
    500: "the model failed or an internal error",
    503: "not ready, overloaded or shutting down (with Retry-After)",
}
#: the paths of a model's routes: metadata, then ``/ready`` and ``/infer`` below them
MODEL_PREFIXES = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
#: the infer route's paths as OpenAPI writes them (the ASGI layer matches them with ``app.INFER_PATH``)
INFER_PATHS = [prefix + "/infer" for prefix in MODEL_PREFIXES]
INFER_BODY = (
    "A v2 inference request as JSON, or (binary tensor extension) a JSON header of "
    "Inference-Header-Content-Length bytes followed by the raw tensors."
)
_REF = "#/components/schemas/{model}"
_BINARY = {"schema": {"type": "string", "format": "binary"}}


def server_version() -> str:
    """torchport's version, from the installed distribution (the package ``__init__`` is a layer above serve)."""
    try:
        return version("torchport")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a FastAPI route that may answer ``codes``."""
    return {code: {"model": ErrorBody, "description": ERRORS[code]} for code in codes}


class ServeApp(FastAPI):
    """FastAPI whose OpenAPI document also holds the infer route."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = with_infer_route(super().openapi())
        return self.openapi_schema


def with_infer_route(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the infer operations, each after its model's metadata route, and the schemas they use."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    _add_schema(schemas, InferenceRequest, "validation")
    for model in (InferenceResponse, ErrorBody):
        _add_schema(schemas, model, "serialization")
    paths: dict[str, Any] = {}
    for path, operations in document.get("paths", {}).items():
        paths[path] = operations
        if path in MODEL_PREFIXES:
            paths[path + "/infer"] = {"post": _infer_operation(path + "/infer")}
    document["paths"] = paths
    return document


def _add_schema(schemas: dict[str, Any], model: type[BaseModel], mode: Literal["validation", "serialization"]) -> None:
    schema = model.model_json_schema(ref_template=_REF, mode=mode)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"schema": {"$ref": _REF.format(model=model.__name__)}}


def _infer_operation(path: str) -> dict[str, Any]:
    names = re.findall(r"\{(\w+)\}", path)
    errors = {
        str(code): {"description": text, "content": {"application/json": _json_schema(ErrorBody)}}
        for code, text in ERRORS.items()
    }
    return {
        "tags": ["inference"],
        "summary": "Infer",
        "operationId": "infer" + re.sub(r"\W", "_", path) + "_post",
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "title": name.title()}}
            for name in names
        ],
        "requestBody": {
            "required": True,
            "description": INFER_BODY,
            "content": {"application/json": _json_schema(InferenceRequest), "application/octet-stream": _BINARY},
        },
        "responses": {
            "200": {
                "description": "The outputs; binary ones follow the JSON header (Inference-Header-Content-Length)",
                "content": {"application/json": _json_schema(InferenceResponse), "application/octet-stream": _BINARY},
            },
            **errors,
        },
    }
