"""Responses as the server builds them, and the canned ones: every error is JSON ``{"error": "..."}``, and every 503
carries ``Retry-After``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from fastapi.responses import Response

from torchport.serve.asgi import Send
from torchport.serve.settings import RETRY_AFTER_S

log = logging.getLogger("torchport.serve")

JSON_HEADERS = {"content-type": "application/json"}
RETRY_HEADERS = {"retry-after": str(RETRY_AFTER_S)}


@dataclass(frozen=True)
class Reply:
    """A response as the infer route builds it: sent as raw ASGI messages, or wrapped in a Starlette Response."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    @classmethod
    def error(cls, status: int, message: str, close: bool = False) -> Reply:
        headers = JSON_HEADERS
        if status == 503:
            headers = {**headers, **RETRY_HEADERS}
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


def unexpected_error(exc: BaseException) -> Reply:
    """Log an unexpected exception (with its traceback, in the server's log only) and answer a JSON 500."""
    log.error("unexpected %s", type(exc).__name__, exc_info=exc)
    return Reply.error(500, f"internal server error ({type(exc).__name__})")


def cancelled() -> Reply:
    """uvicorn cancels the requests still running when its drain period ends: answer them 503 and close, rather
    than let the cancellation reach uvicorn (a traceback in the log and a plain-text 500). The request is over
    either way, so the cancellation is consumed here."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    log.warning("shutdown: a request still running at the end of the drain period was answered 503")
    return Reply.error(503, "the server is shutting down; try again later", close=True)
