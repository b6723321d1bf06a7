"""The ASGI application: the Open Inference Protocol v2 REST surface over a :class:`Repository`.

Every error is JSON ``{"error": "..."}``. The caller's faults are 4xx: 400 bad request, 401 missing API key, 404
unknown model or route, 405 wrong method, 408 body not received within ``--body-timeout``, 413 body over the limit.
The server's own are 500: ONNX Runtime failing on a validated request, or any unexpected exception (logged; the
client gets one line, never a traceback). 503, always with ``Retry-After``, is not ready, overloaded, or shutting
down. An outermost ASGI layer times every request for the metrics and the structured access log.

Overload is shed on arrival: an infer request is admitted only while fewer than ``max_queue`` requests for its model
are still being read or queued beyond the batch the model runs next (``DynamicBatcher.backlog``), so a refused
request costs its headers and a 503, not reading, parsing and validating a body that would be thrown away (its body,
if the client sends it anyway, is discarded unparsed by the HTTP layer). Connection limits and header/body read
timeouts live one layer down, in :mod:`torchport.serve.connections`.

``POST .../infer``, the one hot route, is answered by that outer layer directly: routing it through FastAPI's
middleware stack, dependency solving and Response objects cost as much CPU as parsing, validating and encoding
the request. FastAPI still serves every other route, and documents the infer route in ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

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
Headers = Mapping[str, str]  # lower-case names, as ASGI gives them
InferHandler = Callable[[Headers, AsyncIterator[bytes], str, str | None], Awaitable["Reply"]]

#: the infer routes, as FastAPI matches them: /v2/models/{name}/infer and /v2/models/{name}/versions/{version}/infer
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_JSON = {"content-type": "application/json"}
#: seconds a 503 asks the client to wait before retrying (every 503 carries it)
RETRY_AFTER_S = 1
_RETRY = {"retry-after": str(RETRY_AFTER_S)}


@dataclass
class Settings:
    max_batch_size: int = 64
    max_batch_delay_ms: float = 2.0
    max_queue: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024
    api_key: str | None = None
    body_timeout_s: float = 30.0


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
        (408, "body not received in time"),
        (413, "body over the limit"),
        (500, "the model failed or an internal error"),
        (503, "not ready, overloaded or shutting down (with Retry-After)"),
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


@dataclass(frozen=True)
class Reply:
    """A response as the infer handler builds it: sent as raw ASGI messages, or wrapped in a Starlette Response."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    @classmethod
    def error(cls, status: int, message: str, close: bool = False) -> Reply:
        headers = _JSON
        if status == 503:
            headers = {**headers, "retry-after": str(RETRY_AFTER_S)}
        if close:
            headers = {**headers, "connection": "close"}
        return cls(status, orjson.dumps({"error": message}), headers)

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, headers=dict(self.headers))

    async def send(self, send: Send) -> None:
        headers = [(b"content-length", str(len(self.body)).encode())]
        headers += [(key.encode("latin-1"), value.encode("latin-1")) for key, value in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def error(status: int, message: str) -> Response:
    return Reply.error(status, message).response()


def unexpected_error(exc: BaseException) -> Reply:
    """Log an unexpected exception (with its traceback, in the server's log only) and answer a JSON 500."""
    log.error("unexpected %s", type(exc).__name__, exc_info=exc)
    return Reply.error(500, f"internal server error ({type(exc).__name__})")


def shutting_down() -> Reply:
    """The answer to a request the server gave up on at the end of its drain period (uvicorn cancels it)."""
    return Reply.error(503, "the server is shutting down; try again later", close=True)


def scope_headers(scope: Scope) -> dict[str, str]:
    """The request headers by lower-case name; the first of repeated ones, as Starlette's ``headers.get``."""
    headers: dict[str, str] = {}
    for key, value in scope["headers"]:
        headers.setdefault(key.decode("latin-1"), value.decode("latin-1"))
    return headers


async def receive_body(receive: Receive) -> AsyncIterator[bytes]:
    """The body's chunks as the server receives them (``Request.stream()`` without the Request)."""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


async def read_body(headers: Headers, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes; gzip/deflate decoded."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ProtocolError(f"the body is {int(declared)} bytes; the limit is {limit}", 413)
        except ValueError:
            raise ProtocolError("Content-Length is not an integer") from None
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"the body passes the limit of {limit} bytes", 413)
        parts.append(chunk)
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    encoding = headers.get("content-encoding", "identity").strip().lower()
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
        )
        metrics.track_queue(label, model.batcher)

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
        return unexpected_error(exc).response()

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)

    def authorized(headers: Headers) -> bool:
        if not settings.api_key:
            return True
        given = headers.get("x-api-key")
        if given is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(given.encode(), settings.api_key.encode())

    def lookup(headers: Headers, name: str, version: str | None) -> ServedModel | Reply:
        if not authorized(headers):
            return Reply.error(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')")
        model = repository.get(name, version)
        if model is None:
            known = sorted(repository.versions)
            if name in repository.versions:
                message = f"model '{name}' has no version '{version}'; it has {repository.versions[name]}"
                return Reply.error(404, message)
            return Reply.error(404, f"unknown model '{name[:80]}'; this server has {known}")
        return model

    @app.get("/v2/health/live", response_model=Live, tags=["health"])
    async def live() -> Response:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", response_model=Ready, responses={503: _ERRORS[503]}, tags=["health"])
    async def ready() -> Response:
        if state["ready"]:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": "the server is not ready"}, status_code=503, headers=_RETRY)

    @app.get("/v2", response_model=ServerMetadata, responses={401: _ERRORS[401]}, tags=["metadata"])
    async def server_metadata(request: Request) -> Response:
        if not authorized(request.headers):
            return error(401, "missing or wrong API key")
        return JSONResponse({"name": "torchport", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
        found = lookup(request.headers, name, version)
        if isinstance(found, Reply):
            return found.response()
        return JSONResponse(repository.metadata(name, found))

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        found = lookup(request.headers, name, version)
        if isinstance(found, Reply):
            return found.response()
        if not state["ready"]:
            body = {"name": name, "ready": False, "error": "the server is not ready"}
            return JSONResponse(body, status_code=503, headers=_RETRY)
        return JSONResponse({"name": name, "ready": True})

    async def infer(headers: Headers, chunks: AsyncIterator[bytes], name: str, version: str | None) -> Reply:
        found = lookup(headers, name, version)
        if isinstance(found, Reply):
            return found
        model = found
        if not state["ready"] or model.batcher is None:
            return Reply.error(503, "the server is not ready")
        batcher = model.batcher
        waiting = batcher.backlog + batcher.arriving
        if waiting >= settings.max_queue:  # shed on arrival: the body is never read
            message = f"model '{batcher.name}' has {waiting} requests queued beyond its next batch or arriving (the "
            return Reply.error(503, message + f"queue holds {settings.max_queue}); try again later")
        batcher.arriving += 1
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                body = await read_body(headers, chunks, settings.max_body_bytes)
            parsed = parse_infer_request(body, headers.get(HEADER_LENGTH), model.inputs, model.outputs)
        except ProtocolError as exc:
            return Reply.error(exc.status, exc.message)
        except TimeoutError:
            message = f"the request body did not arrive within {settings.body_timeout_s:g} s"
            return Reply.error(408, message, close=True)
        finally:
            batcher.arriving -= 1
        try:
            results = await batcher.submit(parsed.inputs, parsed.batch)
        except Overloaded as exc:
            return Reply.error(503, str(exc))
        except InferenceFailed as exc:  # validated input: the server's fault, not the caller's
            log.error("%s", exc)
            metrics.inference_failures.labels(batcher.name).inc()
            return Reply.error(500, str(exc))
        content, content_headers = encode_response(name, version or DEFAULT_VERSION, parsed, results, model.outputs)
        return Reply(200, content, content_headers)

    async def infer_route(request: Request, name: str, version: str | None = None) -> Response:
        """The FastAPI route of ``infer``, for the OpenAPI document; ASGIWrapper answers these paths itself."""
        reply = await infer(request.headers, request.stream(), name, version)
        return reply.response()

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
            infer_route,
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

    return ASGIWrapper(app, metrics, repository, infer)


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
    """Outermost layer: the infer fast path, metrics, the JSON access log, and the last line of defence: any
    exception becomes a JSON 500, and a request uvicorn cancels at the end of its drain period a JSON 503 (no
    traceback, no uvicorn plain-text 500)."""

    def __init__(self, app: FastAPI, metrics: Metrics, repository: Repository, infer: InferHandler) -> None:
        self.app = app
        self.metrics = metrics
        self.repository = repository
        self.infer = infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        match = INFER_PATH.fullmatch(path) if scope["method"] == "POST" else None
        status, sent = 0, 0
        try:
            if match is not None:
                status, sent = await self._infer(scope, receive, send, match[1], match[2])
            else:
                status, sent = await self._app(scope, receive, send)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe(_endpoint(path), status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("", 0)
                access_log.info(
                    orjson.dumps(
                        {
                            "ts": round(time.time(), 3),
                            "client": client[0],
                            "method": scope.get("method"),
                            "path": path[:200],
                            "status": status,
                            "ms": round(seconds * 1000, 3),
                            "bytes": sent,
                        }
                    ).decode()
                )

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> tuple[int, int]:
        try:
            reply = await self.infer(scope_headers(scope), receive_body(receive), name, version)
        except asyncio.CancelledError:
            reply = _cancelled()
        except ClientDisconnect:
            reply = Reply.error(400, "the client disconnected before sending the whole request")
        except Exception as exc:
            reply = unexpected_error(exc)
        await reply.send(send)
        return reply.status, len(reply.body)

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, int]:
        """Any other route, through FastAPI; the response's status and size are watched on their way out."""
        status, sent = 0, 0

        async def watch(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 503 and not any(key.lower() == b"retry-after" for key, _ in message.get("headers", [])):
                    message["headers"] = [*message.get("headers", []), (b"retry-after", str(RETRY_AFTER_S).encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            if status == 0:
                reply = _cancelled()
                await reply.send(send)
                status, sent = reply.status, len(reply.body)
        except Exception as exc:
            if status == 0:
                reply = unexpected_error(exc)
                await reply.send(send)
                status, sent = reply.status, len(reply.body)
        return status, sent


def _cancelled() -> Reply:
    """uvicorn cancels the requests still running when its drain period ends: answer them 503 and close, rather
    than let the cancellation reach uvicorn (a traceback in the log and a plain-text 500). The request is over
    either way, so the cancellation is consumed here."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    log.warning("shutdown: a request still running at the end of the drain period was answered 503")
    return shutting_down()
