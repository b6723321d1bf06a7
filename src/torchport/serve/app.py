"""The ASGI application: the Open Inference Protocol v2 REST surface over a :class:`Repository`.

Every error is JSON ``{"error": "..."}``. The caller's faults are 4xx: 400 bad request, 401 missing API key, 404
unknown model or route, 405 wrong method, 408 body not received within ``--body-timeout``, 413 body over the limit.
The server's own are 500: ONNX Runtime failing on a validated request, or any unexpected exception (logged; the
client gets one line, never a traceback). 503, always with ``Retry-After``, is not ready, overloaded, or shutting
down. Connection limits and header/body read timeouts live one layer down, in :mod:`torchport.serve.connections`.

The outermost layer, :class:`ASGIWrapper`, times every request for the metrics and the structured access log, and
routes: ``.../infer``, the one hot route, goes straight to :func:`torchport.serve.infer.infer` (routing it through
FastAPI's middleware stack, dependency solving and Response objects cost as much CPU as parsing, validating and
encoding the request); FastAPI (:mod:`torchport.serve.routes`) serves every other route, and its OpenAPI document
describes the infer route too (:mod:`torchport.serve.openapi`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import orjson
from fastapi import FastAPI
from starlette.datastructures import URL
from starlette.requests import ClientDisconnect
from starlette.responses import RedirectResponse

from torchport.serve.asgi import Message, Receive, Scope, Send, receive_body, scope_headers
from torchport.serve.batcher import DynamicBatcher
from torchport.serve.infer import infer
from torchport.serve.metrics import Metrics
from torchport.serve.models import Repository
from torchport.serve.reply import Reply, cancelled, unexpected_error
from torchport.serve.routes import create_api
from torchport.serve.settings import DEFAULTS, RETRY_AFTER_S, ServeSettings
from torchport.serve.state import ServerState

access_log = logging.getLogger("torchport.serve.access")
log = logging.getLogger("torchport.serve")

#: the infer route, /v2/models/{name}/infer and /v2/models/{name}/versions/{version}/infer, and any trailing
#: slashes (redirected, as FastAPI redirects its own routes' paths)
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer(/*)")
#: any model route: the model (and version) its metrics are labelled with
MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?")
_RETRY_AFTER = (b"retry-after", str(RETRY_AFTER_S).encode())


def create_app(repository: Repository, settings: ServeSettings = DEFAULTS) -> ASGIWrapper:
    """The app serving ``repository``: one dynamic batcher per model, started and drained with the app."""
    state = ServerState(repository, settings, Metrics())
    for model in repository.unique():
        label = model.label
        model.batcher = DynamicBatcher(
            label,
            model.run,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1000.0,
            max_queue=settings.max_queue,
            mergeable=model.mergeable,
            on_batch=state.metrics.batch_size.labels(label).observe,
        )
        state.metrics.track_queue(label, model.batcher)
    return ASGIWrapper(create_api(state, _lifespan(state)), state)


def _lifespan(state: ServerState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    batchers = [model.batcher for model in state.repository.unique() if model.batcher is not None]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for batcher in batchers:
            batcher.start()
        state.ready = True
        log.info("ready: %s", ", ".join(f"{n}/{v}" for n, v in state.repository.models))
        try:
            yield
        finally:
            state.ready = False
            for drain in state.drains:
                await drain()
            for batcher in batchers:
                await batcher.stop()

    return lifespan


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
    """Outermost layer: the router of the infer route, metrics, the JSON access log, and the last line of
    defence: any exception becomes a JSON 500, and a request uvicorn cancels at the end of its drain period a JSON
    503 (no traceback, no uvicorn plain-text 500)."""

    def __init__(self, app: FastAPI, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.metrics = state.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        match = INFER_PATH.fullmatch(path)
        status, sent = 0, 0
        try:
            if match is None:
                status, sent = await self._app(scope, receive, send)
            elif scope["method"] == "POST" and not match[3]:
                status, sent = await self._infer(scope, receive, send, match[1], match[2])
            else:
                status, sent = await self._not_infer(scope, receive, send)
        finally:
            seconds = time.perf_counter() - start
            model = self._model_label(path, match)
            self.metrics.observe("rest", _endpoint(path), model, seconds, str(status) if status >= 400 else None)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(scope, status, seconds, sent)

    def _model_label(self, path: str, match: re.Match[str] | None) -> str:
        if match is None:
            match = MODEL_PATH.match(path)
            if match is None:
                return ""
        return self.state.model_label(match[1], match[2])

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> tuple[int, int]:
        try:
            reply = await infer(self.state, scope_headers(scope), receive_body(receive), name, version)
        except asyncio.CancelledError:
            reply = cancelled()
        except ClientDisconnect:
            reply = Reply.error(400, "the client disconnected before sending the whole request")
        except Exception as exc:
            reply = unexpected_error(exc)
        await reply.send(send)
        return reply.status, len(reply.body)

    async def _not_infer(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, int]:
        """The infer path with another method (405), or with trailing slashes (307 to the path without them)."""
        path: str = scope["path"]
        if not path.endswith("/"):
            return await _answer(Reply.error(405, "method not allowed"), send)
        redirect = RedirectResponse(url=str(URL(scope={**scope, "path": path.rstrip("/")})))
        await redirect(scope, receive, send)
        return redirect.status_code, len(redirect.body)

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, int]:
        """Any other route, through FastAPI; the response's status and size are watched on their way out."""
        status, sent = 0, 0

        async def watch(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 503 and not any(key.lower() == b"retry-after" for key, _ in message.get("headers", [])):
                    message["headers"] = [*message.get("headers", []), _RETRY_AFTER]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            if status == 0:
                status, sent = await _answer(cancelled(), send)
        except Exception as exc:
            if status == 0:
                status, sent = await _answer(unexpected_error(exc), send)
        return status, sent


async def _answer(reply: Reply, send: Send) -> tuple[int, int]:
    await reply.send(send)
    return reply.status, len(reply.body)


def _log_access(scope: Scope, status: int, seconds: float, sent: int) -> None:
    client = scope.get("client") or ("", 0)
    record = {
        "ts": round(time.time(), 3),
        "client": client[0],
        "method": scope.get("method"),
        "path": scope["path"][:200],
        "status": status,
        "ms": round(seconds * 1000, 3),
        "bytes": sent,
    }
    access_log.info(orjson.dumps(record).decode())
