"""Reading an infer request's body: refused as soon as it passes the limit, gzip/deflate decoded."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from torchport.serve.asgi import Headers
from torchport.serve.protocol import ProtocolError


async def read_body(headers: Headers, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (before any arrives when the
    declared Content-Length does); gzip/deflate decoded."""
    _check_declared_length(headers.get("content-length"), limit)
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
    return _decompress(body, encoding, limit)


def _check_declared_length(declared: str | None, limit: int) -> None:
    if declared is None:
        return
    try:
        if int(declared) > limit:
            raise ProtocolError(f"the body is {int(declared)} bytes; the limit is {limit}", 413)
    except ValueError:
        raise ProtocolError("Content-Length is not an integer") from None


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Decode at most ``limit`` + 1 bytes, so a small compressed bomb is refused without being inflated."""
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
