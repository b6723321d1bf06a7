"""What every route of one server reads: its models, its settings, its metrics, and whether it is ready."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from torchport.serve.asgi import Headers
from torchport.serve.metrics import Metrics
from torchport.serve.models import Repository, ServedModel
from torchport.serve.settings import ServeSettings

UNAUTHORIZED = "missing or wrong API key"


@dataclass(frozen=True)
class Refusal:
    """A request answered before it reaches a model: the HTTP status (gRPC maps it to a status code of its own) and
    the one-line message."""

    status: int
    message: str


@dataclass
class ServerState:
    repository: Repository
    settings: ServeSettings
    metrics: Metrics
    ready: bool = False  # the batchers run: between the app's start-up and the start of its shutdown
    #: awaited on shutdown before the batchers stop: front ends beside the ASGI app (gRPC) finishing their calls
    drains: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def authorized(self, headers: Headers) -> bool:
        """The API key, if the server has one, from ``X-API-Key`` or ``Authorization: Bearer``."""
        key = self.settings.api_key
        if not key:
            return True
        given = headers.get("x-api-key")
        if given is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(given.encode(), key.encode())

    def lookup(self, headers: Headers, name: str, version: str | None) -> ServedModel | Refusal:
        """The model a model route names, or the 401/404 that answers the request instead."""
        if not self.authorized(headers):
            return Refusal(401, f"{UNAUTHORIZED} (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')")
        model = self.repository.get(name, version)
        if model is not None:
            return model
        versions = self.repository.versions
        if name in versions:
            return Refusal(404, f"model '{name}' has no version '{version}'; it has {versions[name]}")
        return Refusal(404, f"unknown model '{name[:80]}'; this server has {sorted(versions)}")

    def model_label(self, name: str, version: str | None) -> str:
        """The metrics' ``model`` label of a request naming ``name`` (and ``version``): ``name:version`` of the
        model served, or empty for a name the server does not serve (so clients cannot add series at will)."""
        model = self.repository.get(name, version)
        return model.label if model is not None else ""
