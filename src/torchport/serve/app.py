"""The ASGI application: the Open Inference Protocol v2 REST surface over a :class:`Repository`.

Every error is JSON ``{"error": "..."}``: 400 bad request, 401 missing API key, 404 unknown model or route, 405
wrong method, 413 body over the limit, 503 not ready or overloaded. An outermost ASGI layer times every request
for the metrics and the structured access log, and turns any unexpected exception into a JSON 400 so that no
request produces a 500 or takes the server down.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from torchport import __version__
from torchport.serve.batcher import DynamicBatcher, InferenceFailed, Overloaded
from torchport.serve.metrics import Metrics
from torchport.serve.models import DEFAULT_VERSION, Repository, ServedModel
from torchport.serve.protocol import HEADER_LENGTH, ProtocolError, encode_response, parse_infer_request

EXTENSIONS = ["binary_tensor_data"]
access_log = logging.getLogger("torchport.serve.access")
log = logging.getLogger("torchport.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Settings:
    max_batch_size: int = 64
    max_batch_delay_ms: float = 2.0
    max_queue: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024
    api_key: str | None = None


# --- OpenAPI documentation models (the handlers parse bodies themselves: binary bodies are not JSON) ----------


class ErrorBody(BaseModel):
    error: str


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Ready(BaseModel):
    name: str | None = None
    ready: bool


class Live(BaseModel):
    live: bool


class ResponseTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseTensor]


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in [
        (400, "bad request"),
        (401, "missing or wrong API key"),
        (404, "unknown model"),
        (413, "body over the limit"),
        (503, "not ready or overloaded"),
    ]
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "A v2 inference request as JSON, or (binary tensor extension) a JSON header of "
        "Inference-Header-Content-Length bytes followed by the raw tensors.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string"},
                                    "parameters": {"type": "object"},
                                    "data": {"type": "array"},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes; gzip/deflate decoded."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ProtocolError(f"the body is {int(declared)} bytes; the limit is {limit}", 413)
        except ValueError:
            raise ProtocolError("Content-Length is not an integer") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"the body passes the limit of {limit} bytes", 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding '{encoding[:20]}' is not supported (use gzip, deflate or none)")
    decoder = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        plain = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise ProtocolError(f"the {encoding} body cannot be decompressed") from None
    if len(plain) > limit:
        raise ProtocolError(f"the decompressed body passes the limit of {limit} bytes", 413)
    if not decoder.eof:
        raise ProtocolError(f"the {encoding} body is truncated")
    return plain


def create_app(repository: Repository, settings: Settings | None = None) -> ASGIWrapper:
    settings = settings or Settings()
    metrics = Metrics()
    state = {"ready": False}
    for model in repository.unique():
        label = f"{model.name}:{model.version}"
        model.batcher = DynamicBatcher(
            label,
            model.run,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1000.0,
            max_queue=settings.max_queue,
            mergeable=model.mergeable,
            on_batch=metrics.batch_size.labels(label).observe,
            on_depth=metrics.queue_depth.labels(label).set,
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for model in repository.unique():
            assert model.batcher is not None
            model.batcher.start()
        state["ready"] = True
        log.info("ready: %s", ", ".join(f"{n}/{v}" for n, v in repository.models))
        try:
            yield
        finally:
            state["ready"] = False
            for model in repository.unique():
                assert model.batcher is not None
                await model.batcher.stop()

    app = FastAPI(
        title="torchport serve",
        version=__version__,
        description="Open Inference Protocol v2 (KServe/Triton REST) with Triton's binary tensor extension.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, message)

    async def validation_error(_: Request, exc: Exception) -> Response:
        return error(400, f"bad request: {str(exc)[:200]}")

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.error("unexpected %s", type(exc).__name__, exc_info=exc)
        return error(400, f"the request could not be processed ({type(exc).__name__})")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)

    def authorized(request: Request) -> bool:
        if not settings.api_key:
            return True
        given = request.headers.get("x-api-key")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(given.encode(), settings.api_key.encode())

    def lookup(request: Request, name: str, version: str | None) -> ServedModel | Response:
        if not authorized(request):
            return error(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')")
        model = repository.get(name, version)
        if model is None:
            known = sorted(repository.versions)
            if name in repository.versions:
                return error(404, f"model '{name}' has no version '{version}'; it has {repository.versions[name]}")
            return error(404, f"unknown model '{name[:80]}'; this server has {known}")
        return model

    @app.get("/v2/health/live", response_model=Live, tags=["health"])
    async def live() -> Response:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", response_model=Ready, responses={503: _ERRORS[503]}, tags=["health"])
    async def ready() -> Response:
        if state["ready"]:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": "the server is not ready"}, status_code=503)

    @app.get("/v2", response_model=ServerMetadata, responses={401: _ERRORS[401]}, tags=["metadata"])
    async def server_metadata(request: Request) -> Response:
        if not authorized(request):
            return error(401, "missing or wrong API key")
        return JSONResponse({"name": "torchport", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
        found = lookup(request, name, version)
        if isinstance(found, Response):
            return found
        return JSONResponse(repository.metadata(name, found))

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        found = lookup(request, name, version)
        if isinstance(found, Response):
            return found
        if not state["ready"]:
            return JSONResponse({"name": name, "ready": False, "error": "the server is not ready"}, status_code=503)
        return JSONResponse({"name": name, "ready": True})

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        found = lookup(request, name, version)
        if isinstance(found, Response):
            return found
        model = found
        if not state["ready"] or model.batcher is None:
            return error(503, "the server is not ready")
        batcher = model.batcher
        batcher.arriving += 1
        try:
            body = await read_body(request, settings.max_body_bytes)
            parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH), model.inputs, model.outputs)
        except ProtocolError as exc:
            return error(exc.status, exc.message)
        finally:
            batcher.arriving -= 1
        try:
            results = await batcher.submit(parsed.inputs, parsed.batch)
        except Overloaded as exc:
            return error(503, str(exc))
        except InferenceFailed as exc:
            return error(400, str(exc))
        content, headers = encode_response(name, version or DEFAULT_VERSION, parsed, results, model.outputs)
        return Response(content, headers=headers)

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(
            prefix,
            model_metadata,
            methods=["GET"],
            response_model=ModelMetadata,
            responses={k: _ERRORS[k] for k in (401, 404)},
            tags=["metadata"],
        )
        app.add_api_route(
            prefix + "/ready",
            model_ready,
            methods=["GET"],
            response_model=Ready,
            responses={k: _ERRORS[k] for k in (401, 404, 503)},
            tags=["health"],
        )
        app.add_api_route(
            prefix + "/infer",
            infer,
            methods=["POST"],
            response_model=InferResponse,
            responses=_ERRORS,
            openapi_extra=_INFER_BODY,
            tags=["inference"],
        )

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return ASGIWrapper(app, metrics, repository)


def _endpoint(path: str) -> str:
    if path.endswith("/infer"):
        return "infer"
    if path.startswith("/v2/health"):
        return "health"
    if path.endswith("/ready"):
        return "model_ready"
    if path.startswith("/v2"):
        return "metadata"
    return {"/metrics": "metrics", "/openapi.json": "openapi"}.get(path, "other")


class ASGIWrapper:
    """Outermost layer: metrics, the JSON access log, and the last line of defence against a 500."""

    def __init__(self, app: FastAPI, metrics: Metrics, repository: Repository) -> None:
        self.app = app
        self.metrics = metrics
        self.repository = repository

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        sent = 0

        async def watch(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 500 and status != 503:  # never let a 5xx other than 503 leave the server
                    message["status"] = status = 400
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if status == 0:
                log.error("unexpected %s", type(exc).__name__, exc_info=exc)
                body = json.dumps({"error": f"the request could not be processed ({type(exc).__name__})"}).encode()
                status = 400
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            endpoint = _endpoint(path)
            self.metrics.observe(endpoint, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("", 0)
                access_log.info(
                    json.dumps(
                        {
                            "ts": round(time.time(), 3),
                            "client": client[0],
                            "method": scope.get("method"),
                            "path": path[:200],
                            "status": status,
                            "ms": round(seconds * 1000, 3),
                            "bytes": sent,
                        }
                    )
                )
