"""Python + ONNX Runtime runner: run a bundle's golden inputs and write the outputs in the bundle's raw format.

Usage: ``python -m torchport.runtimes.python_ort BUNDLE OUT_DIR [--artifact model.onnx]`` (or, from a bundle,
``python runners/python/python_ort.py BUNDLE OUT_DIR``). Needs only NumPy and ``onnxruntime``; uses the CUDA
provider when ONNX Runtime offers it, the CPU provider otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    from torchport.runtimes import rawio
except ImportError:  # copied beside rawio.py into bundle/runners/python/
    import rawio  # type: ignore[no-redef]

RUNTIME = "onnxruntime"


def run(bundle: Path, out_dir: Path, artifact_path: str | None = None) -> Path:
    import onnxruntime as ort

    manifest = rawio.read_manifest(bundle)
    artifact = rawio.pick_artifact(manifest, artifact_path, ("onnx", "ort"))
    model = rawio.checked_file(bundle, artifact)
    inputs = rawio.golden_inputs(bundle, manifest)
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
    names = [o.name for o in session.get_outputs()]

    def infer(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(session.run(names, feed))

    outputs = dict(zip(names, infer(inputs), strict=True))
    latency = rawio.time_batches(infer, inputs)
    device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    return rawio.write_result(out_dir, RUNTIME, ort.__version__, artifact, outputs, latency, device)


def main(argv: list[str] | None = None) -> int:
    return rawio.runner_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
