"""Raw ASGI plumbing for the infer route, which is answered without Starlette's Request and Response objects (see
:mod:`torchport.serve.app` for why)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette.requests import ClientDisconnect

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Mapping[str, str]  # lower-case names, as ASGI gives them


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
