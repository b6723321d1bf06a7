"""Python + OpenVINO runner: OpenVINO reads the bundle's ONNX model directly and compiles it for the CPU.

Usage: ``python -m torchport.runtimes.openvino_runner BUNDLE OUT_DIR [--artifact model.onnx]`` (or, from a
bundle, ``python runners/openvino/openvino_runner.py BUNDLE OUT_DIR``). Needs only NumPy and ``openvino``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    from torchport.runtimes import rawio
except ImportError:  # copied beside rawio.py into bundle/runners/openvino/
    import rawio  # type: ignore[no-redef]

RUNTIME = "openvino"


def run(bundle: Path, out_dir: Path, artifact_path: str | None = None) -> Path:
    import openvino as ov

    manifest = rawio.read_manifest(bundle)
    artifact = rawio.pick_artifact(manifest, artifact_path, ("onnx",))
    model_path = rawio.checked_file(bundle, artifact)
    inputs = rawio.golden_inputs(bundle, manifest)
    core = ov.Core()
    # f32 inference precision: the CPU plugin would otherwise pick bf16 on CPUs that have it.
    config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
    # A converted graph (fp16 casts) may give an output several tensor names: prefer the manifest's name.
    wanted = {spec["name"] for spec in manifest["outputs"]}
    names = [next(iter(sorted(wanted & output.get_names())), output.get_any_name()) for output in compiled.outputs]
    request = compiled.create_infer_request()

    def infer(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = request.infer(feed)
        return [np.array(results[output]) for output in compiled.outputs]

    outputs = dict(zip(names, infer(inputs), strict=True))
    latency = rawio.time_batches(infer, inputs)
    return rawio.write_result(out_dir, RUNTIME, ov.get_version(), artifact, outputs, latency)


def main(argv: list[str] | None = None) -> int:
    return rawio.runner_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
