"""The ASGI app in process, with no sockets and no ONNX Runtime: a NumPy model behind the real app, batchers and
routes, spoken to with raw ASGI messages as uvicorn would send them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import numpy as np
import pytest

from torchport.bundle.manifest import TensorSpec
from torchport.serve.app import INFER_PATH, ASGIWrapper, create_app
from torchport.serve.batcher import Arrays
from torchport.serve.models import Repository, ServedModel
from torchport.serve.openapi import INFER_PATHS
from torchport.serve.schema import (
    ErrorBody,
    InferenceRequest,
    InferenceResponse,
    Live,
    ModelMetadata,
    Ready,
    RequestInput,
    ServerMetadata,
)
from torchport.serve.settings import ServeSettings

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")
Answer = tuple[int, dict[str, str], bytes]


def double(inputs: Arrays) -> Arrays:
    return {"y": inputs["x"] * 2}


def app(api_key: str | None = None) -> ASGIWrapper:
    spec = [TensorSpec(name="x", dtype="float32", shape=["batch", 3])]
    model = ServedModel("double", "1", spec, [TensorSpec(name="y", dtype="float32", shape=["batch", 3])], double)
    repository = Repository()
    repository.add(model, "double", "1")
    return create_app(repository, ServeSettings(api_key=api_key))


@asynccontextmanager
async def running(asgi: ASGIWrapper) -> AsyncIterator[None]:
    """The app between its lifespan start-up and shutdown, as uvicorn runs it."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: Any) -> None:
        await outbox.put(dict(message))

    task = asyncio.create_task(asgi({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


async def call(
    asgi: ASGIWrapper, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Answer:
    """One request: the body in one message, then (after the response) a disconnect."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [(key.lower().encode(), value.encode()) for key, value in (headers or {}).items()],
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    done = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await asgi(scope, receive, send)
    start = sent[0]
    answer_headers = {key.decode(): value.decode() for key, value in start["headers"]}
    return start["status"], answer_headers, b"".join(m.get("body", b"") for m in sent[1:])


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


def infer_body(rows: int) -> bytes:
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    tensor = RequestInput(name="x", shape=[rows, 3], datatype="FP32", data=x.ravel().tolist())
    return InferenceRequest(id="r", inputs=[tensor]).model_dump_json(exclude_unset=True).encode()


def test_infer_is_served_on_both_paths_and_answers_as_the_response_model() -> None:
    asgi = app()

    async def body() -> list[Answer]:
        async with running(asgi):
            paths = ["/v2/models/double/infer", "/v2/models/double/versions/1/infer"]
            return [await call(asgi, "POST", path, infer_body(2)) for path in paths]

    for status, headers, answer in run(body):
        assert status == 200 and headers["content-type"] == "application/json"
        response = InferenceResponse.model_validate_json(answer)
        assert response.model_name == "double" and response.model_version == "1" and response.id == "r"
        assert response.outputs[0].data == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def test_the_infer_path_has_one_route_other_methods_get_405_and_trailing_slashes_a_redirect() -> None:
    asgi = app()
    assert not [route for route in asgi.app.routes if getattr(route, "path", "").endswith("/infer")]

    async def body() -> list[Answer]:
        async with running(asgi):
            return [
                await call(asgi, "GET", "/v2/models/double/infer"),
                await call(asgi, "PUT", "/v2/models/double/versions/1/infer"),
                await call(asgi, "POST", "/v2/models/double/infer/", infer_body(1)),
                await call(asgi, "POST", "/v2/models/double/infer/x", infer_body(1)),
            ]

    get, put, slash, below = run(body)
    for status, headers, answer in (get, put):
        assert (status, headers["content-type"]) == (405, "application/json")
        assert ErrorBody.model_validate_json(answer).error == "method not allowed"
    assert slash[0] == 307 and slash[1]["location"] == "http://127.0.0.1:8000/v2/models/double/infer"
    assert below[0] == 404 and ErrorBody.model_validate_json(below[2]).error == "not found"


def test_before_start_up_infer_and_readiness_are_503_with_retry_after() -> None:
    asgi = app()

    async def body() -> list[Answer]:  # no lifespan: the batchers never started
        return [
            await call(asgi, "POST", "/v2/models/double/infer", infer_body(1)),
            await call(asgi, "GET", "/v2/health/ready"),
            await call(asgi, "GET", "/v2/models/double/ready"),
        ]

    infer, ready, model_ready = run(body)
    assert infer[0] == ready[0] == model_ready[0] == 503
    assert all(answer[1]["retry-after"] == "1" for answer in (infer, ready, model_ready))
    assert ErrorBody.model_validate_json(infer[2]).error == "the server is not ready"
    assert Ready.model_validate_json(ready[2]) == Ready(ready=False, error="the server is not ready")
    assert Ready.model_validate_json(model_ready[2]).name == "double"


def test_health_and_metadata_bodies_are_the_schema_models() -> None:
    asgi = app()

    async def body() -> dict[str, Answer]:
        async with running(asgi):
            paths = ["/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/double", "/v2/models/double/ready"]
            return {path: await call(asgi, "GET", path) for path in paths}

    answers = run(body)
    assert all(status == 200 for status, _, _ in answers.values())
    assert Live.model_validate_json(answers["/v2/health/live"][2]).live
    assert answers["/v2/health/ready"][2] == b'{"ready":true}'
    server = ServerMetadata.model_validate_json(answers["/v2"][2])
    assert server.name == "torchport" and server.extensions == ["binary_tensor_data"]
    metadata = ModelMetadata.model_validate_json(answers["/v2/models/double"][2])
    assert metadata.inputs[0].shape == [-1, 3] and metadata.outputs[0].datatype == "FP32"
    assert answers["/v2/models/double/ready"][2] == b'{"name":"double","ready":true}'


def test_the_api_key_guards_infer_and_metadata_but_not_health() -> None:
    asgi = app(api_key="k")

    async def body() -> list[int]:
        async with running(asgi):
            return [
                (await call(asgi, "POST", "/v2/models/double/infer", infer_body(1)))[0],
                (await call(asgi, "GET", "/v2"))[0],
                (await call(asgi, "GET", "/v2/health/live"))[0],
                (await call(asgi, "POST", "/v2/models/double/infer", infer_body(1), {"X-API-Key": "k"}))[0],
                (await call(asgi, "GET", "/v2/models/double", headers={"Authorization": "Bearer k"}))[0],
            ]

    assert run(body) == [401, 401, 200, 200, 200]


def test_the_openapi_document_describes_infer_with_the_models() -> None:
    asgi = app()
    status, _, answer = run(lambda: call(asgi, "GET", "/openapi.json"))
    document = json.loads(answer)
    schemas = document["components"]["schemas"]
    request_schema = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in request_schema.pop("$defs").items():
        assert schemas[name] == schema
    assert status == 200 and schemas["InferenceRequest"] == request_schema
    for path in INFER_PATHS:
        assert INFER_PATH.fullmatch(re.sub(r"\{\w+\}", "x", path)), path
        operation = document["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/InferenceRequest"}
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/InferenceResponse"}
        assert {"400", "404", "413", "503"} <= set(operation["responses"])
