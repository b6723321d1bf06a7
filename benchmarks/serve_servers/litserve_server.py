"""LitServe serving a bundle's ``model.onnx`` through ONNX Runtime, with LitServe's own dynamic batching.

    python benchmarks/serve_servers/litserve_server.py runs/serve-bench/digits/bundle --port 8000 --threads 1

``POST /v2/models/{name}/infer`` speaks the Open Inference Protocol v2 JSON form (one sample per request here),
like torchport serve. LitServe collects up to ``--max-batch-size`` requests, waiting at most
``--batch-timeout-ms``, in its inference worker process, then runs them as one ORT call.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from common import decode, encode, load_session, model_name, server_arguments


class OnnxAPI(ls.LitAPI):
    def __init__(self, bundle: Path, threads: int, max_batch_size: int, batch_timeout_s: float) -> None:
        self.bundle = bundle
        self.threads = threads
        self.name = model_name(bundle)
        super().__init__(
            max_batch_size=max_batch_size, batch_timeout=batch_timeout_s, api_path=f"/v2/models/{self.name}/infer"
        )

    def setup(self, device: str) -> None:
        self.session, self.input_name, self.output_names = load_session(self.bundle, self.threads)

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe passes the JSON body
        return decode(request)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(inputs)

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: x})

    def unbatch(self, outputs: list[np.ndarray]) -> list[list[np.ndarray]]:
        return [[o[i : i + 1] for o in outputs] for i in range(len(outputs[0]))]

    def encode_response(self, outputs: list[np.ndarray]) -> dict[str, Any]:
        return encode(self.name, self.output_names, outputs)


def main() -> int:
    parser = server_arguments(__doc__)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    args = parser.parse_args()
    api = OnnxAPI(args.bundle, args.threads, args.max_batch_size, args.batch_timeout_ms / 1000.0)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=60)
    server.run(host=args.host, port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
