"""Every route but infer, served by FastAPI: health, metadata and metrics; and the JSON errors FastAPI answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from torchport.serve.openapi import MODEL_PREFIXES, ServeApp, error_responses, server_version
from torchport.serve.reply import RETRY_HEADERS, Reply, unexpected_error
from torchport.serve.schema import EXTENSIONS, Live, ModelMetadata, Ready, ServerMetadata
from torchport.serve.state import UNAUTHORIZED, Refusal, ServerState

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
NOT_READY = "the server is not ready"


def create_api(state: ServerState, lifespan: Lifespan) -> FastAPI:
    app = ServeApp(
        title="torchport serve",
        version=server_version(),
        description="Open Inference Protocol v2 (KServe/Triton REST) with Triton's binary tensor extension.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _add_error_handlers(app)
    _add_server_routes(app, state)
    _add_model_routes(app, state)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    return app


def json_reply(body: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def error(status: int, message: str) -> Response:
    return Reply.error(status, message).response()


def _add_error_handlers(app: FastAPI) -> None:
    """FastAPI's own 404/405/400 and any unexpected exception, as JSON ``{"error": ...}``."""

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


def _add_server_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v2/health/live", response_model=Live, tags=["health"])
    async def live() -> Response:
        return json_reply(Live(live=True))

    @app.get("/v2/health/ready", response_model=Ready, responses=error_responses(503), tags=["health"])
    async def ready() -> Response:
        if state.ready:
            return json_reply(Ready(ready=True))
        return json_reply(Ready(ready=False, error=NOT_READY), 503, RETRY_HEADERS)

    @app.get("/v2", response_model=ServerMetadata, responses=error_responses(401), tags=["metadata"])
    async def server_metadata(request: Request) -> Response:
        if not state.authorized(request.headers):
            return error(401, UNAUTHORIZED)
        return json_reply(ServerMetadata(name="torchport", version=server_version(), extensions=EXTENSIONS))


def _add_model_routes(app: FastAPI, state: ServerState) -> None:
    async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
        found = state.lookup(request.headers, name, version)
        if isinstance(found, Refusal):
            return error(found.status, found.message)
        return json_reply(state.repository.metadata(name, found))

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        found = state.lookup(request.headers, name, version)
        if isinstance(found, Refusal):
            return error(found.status, found.message)
        if not state.ready:
            return json_reply(Ready(name=name, ready=False, error=NOT_READY), 503, RETRY_HEADERS)
        return json_reply(Ready(name=name, ready=True))

    metadata_errors, ready_errors = error_responses(401, 404), error_responses(401, 404, 503)
    for prefix in MODEL_PREFIXES:
        app.add_api_route(
            prefix,
            model_metadata,
            methods=["GET"],
            response_model=ModelMetadata,
            responses=metadata_errors,
            tags=["metadata"],
        )
        app.add_api_route(
            prefix + "/ready",
            model_ready,
            methods=["GET"],
            response_model=Ready,
            responses=ready_errors,
            tags=["health"],
        )
