"""The Open Inference Protocol v2 over gRPC (KServe/Triton ``GRPCInferenceService``), beside REST in one process.

A ``grpc.aio`` server on ``--grpc-port`` shares the REST app's :class:`~torchport.serve.state.ServerState`: the
same models and dynamic batchers (a gRPC and a REST request can ride in one batch), the same admission and
overload shedding (:func:`torchport.serve.infer.admit`), the same request checks and messages
(:mod:`torchport.serve.grpc_codec`), the same API key (``authorization: Bearer KEY`` or ``x-api-key: KEY``
metadata) and the same metrics, with ``protocol="grpc"``. It runs on uvicorn's event loop: started before the
REST app (so a port that cannot be bound stops the server before it serves anything), and stopped with it.
Overload is shed as over REST, before a request is validated or queued, but after its message is read: gRPC reads
a whole message before the call reaches the server (``--max-body-bytes`` bounds it). At most
``--limit-concurrency`` calls run at once; gRPC itself answers the next RESOURCE_EXHAUSTED.

Errors are gRPC status codes with the REST message as details: the caller's faults INVALID_ARGUMENT (REST's 400),
a missing key UNAUTHENTICATED (401), an unknown model or version NOT_FOUND (404), a message over
``--max-body-bytes`` RESOURCE_EXHAUSTED (413, refused by gRPC itself); not ready, overloaded or shutting down
UNAVAILABLE (503); the server's own faults INTERNAL (500). ``ServerReady`` and ``ModelReady`` answer
``ready: false`` rather than an error while the server starts or stops, and ``ModelReady`` for a model it does not
serve, as Triton does.

The proto is ``proto/grpc_predict_v2.proto``, compiled when the server starts (:mod:`torchport.serve.grpc_proto`):
no generated code is kept in the tree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson

from torchport.errors import UsageError
from torchport.serve.batcher import InferenceFailed, Overloaded
from torchport.serve.grpc_codec import infer_response, metadata_response, parse_grpc_request
from torchport.serve.grpc_proto import METHODS, SERVICE, Messages, messages
from torchport.serve.infer import admit
from torchport.serve.models import DEFAULT_VERSION, ServedModel
from torchport.serve.openapi import server_version
from torchport.serve.protocol import ProtocolError
from torchport.serve.schema import EXTENSIONS
from torchport.serve.state import UNAUTHORIZED, Refusal, ServerState

log = logging.getLogger("torchport.serve")
access_log = logging.getLogger("torchport.serve.access")

#: REST status -> the gRPC status name that means the same
STATUS_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class Refused(Exception):
    """A call answered with an error status: the refusal holds the REST status it stands for and the message."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class InferenceService:
    """The ``GRPCInferenceService`` servicer over one server's state. Every method is timed into the metrics."""

    def __init__(self, state: ServerState, messages: Messages) -> None:
        self.state = state
        self.messages = messages

    # --- health and metadata ---------------------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> Any:  # the proto's method names (CamelCase)
        return await self._answer("health", "", context, self._server_live())

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return await self._answer("health", "", context, self._server_ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        label = self.state.model_label(request.name, request.version or None)
        return await self._answer("model_ready", label, context, self._model_ready(request, context))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return await self._answer("metadata", "", context, self._server_metadata(context))

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        label = self.state.model_label(request.name, request.version or None)
        return await self._answer("metadata", label, context, self._model_metadata(request, context))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        label = self.state.model_label(request.model_name, request.model_version or None)
        return await self._answer("infer", label, context, self._infer(request, context))

    async def _server_live(self) -> Any:
        return self.messages.ServerLiveResponse(live=True)

    async def _server_ready(self) -> Any:
        return self.messages.ServerReadyResponse(ready=self.state.ready)

    async def _model_ready(self, request: Any, context: Any) -> Any:
        """Ready or not; a model the server does not serve is not ready (as Triton answers, and as tritonclient's
        ``is_model_ready`` expects), but a missing API key is still refused."""
        try:
            self._lookup(context, request.name, request.version)
        except Refused as exc:
            if exc.refusal.status != 404:
                raise
            return self.messages.ModelReadyResponse(ready=False)
        return self.messages.ModelReadyResponse(ready=self.state.ready)

    async def _server_metadata(self, context: Any) -> Any:
        if not self.state.authorized(_metadata(context) if self.state.settings.api_key else {}):
            raise Refused(Refusal(401, f"{UNAUTHORIZED} (send metadata 'authorization: Bearer KEY' or 'x-api-key')"))
        response = self.messages.ServerMetadataResponse(name="torchport", version=server_version())
        response.extensions.extend(EXTENSIONS)
        return response

    async def _model_metadata(self, request: Any, context: Any) -> Any:
        model = self._lookup(context, request.name, request.version)
        return metadata_response(self.messages, self.state.repository.metadata(request.name, model))

    def _lookup(self, context: Any, name: str, version: str) -> ServedModel:
        headers = _metadata(context) if self.state.settings.api_key else {}
        found = self.state.lookup(headers, name, version or None)
        if isinstance(found, Refusal):
            raise Refused(found)
        return found

    # --- infer -----------------------------------------------------------------------------------------------

    async def _infer(self, request: Any, context: Any) -> Any:
        """Admit, validate, batch, answer: REST's :func:`~torchport.serve.infer.infer` with the body already read
        (gRPC reads a whole message before the call starts)."""
        state = self.state
        version = request.model_version or None
        admitted = admit(state, _metadata(context) if state.settings.api_key else {}, request.model_name, version)
        if isinstance(admitted, Refusal):
            raise Refused(admitted)
        model, batcher = admitted
        batcher.callers.enter()  # a batch waits for the callers it saw lately: their calls cannot be seen coming
        try:
            parsed = parse_grpc_request(request, model.inputs, model.outputs, model.columns)
            results = await batcher.submit(parsed.inputs, parsed.batch)
        except ProtocolError as exc:
            raise Refused(Refusal(exc.status, exc.message)) from None
        except Overloaded as exc:
            raise Refused(Refusal(503, str(exc))) from None
        except InferenceFailed as exc:  # validated input: the server's fault, not the caller's
            log.error("%s", exc)
            state.metrics.inference_failures.labels(batcher.name).inc()
            raise Refused(Refusal(500, str(exc))) from None
        finally:
            batcher.callers.leave()
        version = version or DEFAULT_VERSION
        return infer_response(self.messages, request.model_name, version, parsed, results, model.outputs)

    # --- every call ------------------------------------------------------------------------------------------

    async def _answer(self, endpoint: str, model: str, context: Any, work: Awaitable[Any]) -> Any:
        """``work``'s response; a refusal or a failure as a status code and a one-line message (the traceback of
        an unexpected failure goes to the server's log only). Timed into the metrics, labelled ``model``."""
        import grpc

        start = time.perf_counter()
        code = "OK"
        try:
            return await work
        except Refused as exc:
            code = STATUS_CODES.get(exc.refusal.status, "UNKNOWN")
            await context.abort(grpc.StatusCode[code], exc.refusal.message)
        except asyncio.CancelledError:
            code = "CANCELLED"
            log.info("a gRPC %s call was cancelled before its answer (client gone, or graceful timeout over)", endpoint)
            raise
        except Exception as exc:  # (context.abort's own exception, raised in the branch above, passes by)
            code = "INTERNAL"
            log.error("unexpected %s", type(exc).__name__, exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal server error ({type(exc).__name__})")
        finally:
            seconds = time.perf_counter() - start
            self.state.metrics.observe("grpc", endpoint, model, seconds, None if code == "OK" else code)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(context, endpoint, model, code, seconds)


def _log_access(context: Any, endpoint: str, model: str, code: str, seconds: float) -> None:
    """One JSON line per call, as REST writes one per request."""
    record = {
        "ts": round(time.time(), 3),
        "client": str(context.peer())[:100],
        "method": "gRPC",
        "path": endpoint,
        "model": model,
        "status": code,
        "ms": round(seconds * 1000, 3),
    }
    access_log.info(orjson.dumps(record).decode())


def _metadata(context: Any) -> dict[str, str]:
    """The call's metadata by (lower-case) key, as the REST headers; read only when an API key is set."""
    headers: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            headers.setdefault(key, value)
    return headers


def _method_handlers(service: InferenceService) -> dict[str, Any]:
    """Every rpc of the service: its handler, and how its messages are read and written."""
    import grpc

    handlers = {}
    for method, (request, response) in METHODS.items():
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            getattr(service, method),
            request_deserializer=getattr(service.messages, request).FromString,
            response_serializer=getattr(service.messages, response).SerializeToString,
        )
    return handlers


class GrpcServer:
    """The gRPC server of one ``torchport serve`` process: bound and started before the REST app, stopped with it
    (new calls are refused UNAVAILABLE at once, and calls in flight get ``graceful_timeout_s`` to finish; a call
    racing the stop inside gRPC's core, before any server code sees it, can come back CANCELLED, as from any gRPC
    server)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._server: Any = None
        self._stopping: asyncio.Future[None] | None = None

    @property
    def address(self) -> str:
        host, port = self.state.settings.host, self.state.settings.grpc_port
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> None:
        try:
            import grpc
        except ImportError:
            raise UsageError("--grpc-port needs grpcio: pip install grpcio grpcio-tools") from None
        settings = self.state.settings
        options = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port another server holds is an error, not a port shared with it
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=settings.limit_concurrency)
        handlers = _method_handlers(InferenceService(self.state, messages()))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)  # looked up by method, not by path, per call
        try:
            bound = server.add_insecure_port(self.address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise UsageError(f"--grpc-port {settings.grpc_port}: cannot listen on {self.address} (port in use?)")
        await server.start()
        self._server = server
        log.info("gRPC: listening on %s", self.address)

    def begin_stop(self) -> None:
        """Stop taking calls now; those in flight finish (or are cancelled after the graceful timeout)."""
        if self._server is not None and self._stopping is None:
            grace = self.state.settings.graceful_timeout_s
            self._stopping = asyncio.ensure_future(self._server.stop(grace))

    async def wait_stopped(self) -> None:
        self.begin_stop()
        if self._stopping is not None:
            await self._stopping
