"""Per-connection guards uvicorn lacks: a connection limit answered with a JSON 503, and read deadlines.

uvicorn closes a keep-alive connection only if it stays silent after a response, so a connection that never sends
a request, or trickles its headers or body a byte at a time, is held for ever (issue 14: 1,700 slow connections held
for 20 s, ~21,000 idle ones exhausting the process's file limit). Its own ``limit_concurrency`` answers plain-text
503s without ``Retry-After`` and logs a warning per request. So :func:`guarded_protocol` subclasses uvicorn's
httptools protocol with three rules, one timer per connection:

- a connection opened while ``max_connections`` are already open is answered a JSON 503 with ``Retry-After`` as soon
  as its first bytes arrive, then closed (it never reaches the app);
- a request's head (its first byte, or a new connection's first byte, to the end of its headers) must arrive within
  ``header_timeout_s``, and the next request's head within ``header_timeout_s`` of the previous response;
- a request's body must arrive within ``body_timeout_s`` of its headers. The infer route enforces this itself and
  answers 408; the timer here, ``BODY_GRACE_S`` later, catches the rest, such as a body the server discards after
  shedding its request.

A connection past a deadline is closed without a response. While a complete request is being answered no deadline
runs: the model's time is not the client's fault.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("torchport.serve")

#: the infer route answers 408 at body_timeout_s; the connection-level timer closes the connection this much later
BODY_GRACE_S = 1.0


@dataclass(frozen=True)
class Limits:
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    retry_after_s: int


def over_limit_response(limits: Limits) -> bytes:
    body = orjson.dumps(
        {
            "error": f"the server already holds its limit of {limits.max_connections} connections "
            "(--limit-concurrency); try again later"
        }
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"retry-after: {limits.retry_after_s}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(limits: Limits, on_refused: Callable[[], None] | None = None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the connection limit and read deadlines of ``limits`` (pass the class as
    ``uvicorn.Config(http=...)``); ``on_refused`` is called for each connection refused over the limit."""
    attributes = {
        "limits": limits,
        "refusal": over_limit_response(limits),
        "on_refused": (on_refused,) if on_refused is not None else (),
    }
    return type(GuardedHttpToolsProtocol.__name__, (GuardedHttpToolsProtocol,), attributes)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """The rules of this module; :func:`guarded_protocol` subclasses it with the limits of one server."""

    limits: ClassVar[Limits]
    refusal: ClassVar[bytes]  # the whole HTTP response a connection over the limit gets
    on_refused: ClassVar[tuple[Callable[[], None], ...]] = ()  # called for each connection refused
    _deadline: asyncio.TimerHandle | None = None
    _over_limit = False
    _reading = False  # between a request's first byte and its last

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._over_limit = len(self.connections) > self.limits.max_connections
        self._arm(self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._over_limit:
            if not self.transport.is_closing():
                for count_refusal in self.on_refused:
                    count_refusal()
                self.transport.write(self.refusal)
                self.transport.close()
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True
        self._arm(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_timeout_s + BODY_GRACE_S)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = False
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self._reading:
            return  # closing, or the body deadline still runs (a body being discarded)
        if self.cycle is None or self.cycle.response_complete:
            self._arm(self.limits.header_timeout_s)  # idle until the next request's head

    def shutdown(self) -> None:
        if self._over_limit and not self.transport.is_closing():
            self.transport.close()
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
