"""The server a user writes by hand: FastAPI + ONNX Runtime, one ``session.run`` per request, no batching.

    python benchmarks/serve_servers/handwritten.py runs/serve-bench/digits/bundle --port 8000 --threads 1

``POST /v2/models/{name}/infer`` takes and returns the Open Inference Protocol v2 JSON form, like torchport serve,
so the benchmark sends all servers the same body. ``session.run`` is called on the event loop, as the simplest
endpoint does: requests are served one after another, with no validation, metrics or batching around them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from common import decode, encode, load_session, model_name, server_arguments
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create_app(bundle: Path, threads: int) -> FastAPI:
    session, input_name, output_names = load_session(bundle, threads)
    name = model_name(bundle)
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post(f"/v2/models/{name}/infer")
    async def infer(request: Request) -> JSONResponse:
        x = decode(await request.json())
        outputs = session.run(output_names, {input_name: x})
        return JSONResponse(encode(name, output_names, outputs))

    return app


def main() -> int:
    parser = server_arguments(__doc__)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.bundle, args.threads), host=args.host, port=args.port, log_level="warning", access_log=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
