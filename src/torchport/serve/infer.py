"""The one infer route, ``POST /v2/models/{name}[/versions/{version}]/infer``: admit, read, parse, batch, answer.

Overload is shed on arrival: a request is admitted only while fewer than ``max_queue`` requests for its model are
still being read or queued beyond the batch the model runs next (``DynamicBatcher.backlog``), so a refused request
costs its headers and a 503, not parsing and validating a body that would be thrown away: the HTTP layer discards the
body unparsed after the answer, or, when the client asked to close the connection, ``_discard_body`` drops it
before the answer (closing with the body unread would reset the connection under the client's upload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from torchport.serve.asgi import Headers
from torchport.serve.batcher import DynamicBatcher, InferenceFailed, Overloaded
from torchport.serve.body import read_body
from torchport.serve.models import DEFAULT_VERSION, ServedModel
from torchport.serve.protocol import HEADER_LENGTH, ProtocolError, encode_response, parse_infer_request
from torchport.serve.reply import Reply
from torchport.serve.state import Refusal, ServerState

log = logging.getLogger("torchport.serve")


async def infer(
    state: ServerState, headers: Headers, chunks: AsyncIterator[bytes], name: str, version: str | None
) -> Reply:
    """Answer one infer request whose body arrives as ``chunks``; every outcome is a Reply, never an exception
    (bar the client disconnecting or the request being cancelled, which the caller answers). Written as one
    coroutine on purpose: each extra coroutine on this path costs measurable time per request."""
    admitted = admit(state, headers, name, version)
    settings = state.settings
    if isinstance(admitted, Refusal):
        if _uploading_then_closing(headers):
            await _discard_body(chunks, settings.max_body_bytes, settings.body_timeout_s)
        return Reply.error(admitted.status, admitted.message)
    model, batcher = admitted
    batcher.arriving += 1  # while its body is read, the batcher waits for it to fill its batch
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            body = await read_body(headers, chunks, settings.max_body_bytes)
        parsed = parse_infer_request(body, headers.get(HEADER_LENGTH), model.inputs, model.outputs, model.columns)
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
        state.metrics.inference_failures.labels(batcher.name).inc()
        return Reply.error(500, str(exc))
    content, content_headers = encode_response(name, version or DEFAULT_VERSION, parsed, results, model.outputs)
    return Reply(200, content, content_headers)


def _uploading_then_closing(headers: Headers) -> bool:
    """The client sends its body without waiting for an answer (no ``Expect: 100-continue``, which waits and
    then sends nothing once refused) and asked to close the connection after the answer."""
    waits = headers.get("expect", "").strip().lower() == "100-continue"
    return not waits and "close" in headers.get("connection", "").lower()


async def _discard_body(chunks: AsyncIterator[bytes], limit: int, timeout_s: float) -> None:
    """Read and drop a refused request's body, up to ``limit`` bytes or ``timeout_s``, before it is answered.

    Only for a client that asked to close the connection: on a keep-alive connection the HTTP layer discards the
    body after the answer, but this one is closed with the answer, and closing a socket that still holds unread
    bytes resets it, so a client still uploading would get a reset or a broken pipe instead of the error."""
    size = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    return


def admit(
    state: ServerState, headers: Headers, name: str, version: str | None
) -> tuple[ServedModel, DynamicBatcher] | Refusal:
    """The model and its batcher, or the 401/404/503 that answers the request before its body is read (REST and
    gRPC alike)."""
    found = state.lookup(headers, name, version)
    if isinstance(found, Refusal):
        return found
    if not state.ready or found.batcher is None:
        return Refusal(503, "the server is not ready")
    batcher = found.batcher
    waiting = batcher.backlog + batcher.arriving
    max_queue = state.settings.max_queue
    if waiting >= max_queue:  # shed on arrival: the body is never read
        message = f"model '{batcher.name}' has {waiting} requests queued beyond its next batch or arriving (the "
        return Refusal(503, message + f"queue holds {max_queue}); try again later")
    return found, batcher
