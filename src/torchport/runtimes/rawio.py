"""Bundle reading and result writing for the Python runners, with only the standard library and NumPy.

This file is copied beside the Python runners into ``bundle/runners/python/`` so they run without torchport: it
reads ``manifest.json`` and the files it names, refuses paths that leave the bundle and files whose SHA-256 does
not match, and writes a runner's outputs in the bundle's raw format (little-endian, row-major) plus
``result.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

NUMPY_DTYPES = {"float32": "<f4", "float16": "<f2", "int64": "<i8", "int32": "<i4", "uint8": "|u1"}
RESULT = "result.json"


class RunnerError(Exception):
    """A bundle this runner refuses (bad path, bad checksum, unsupported artifact): one line, exit code 2."""


def safe_path(root: Path, relative: str) -> Path:
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or "\\" in relative or any(part == ".." for part in pure.parts):
        raise RunnerError(f"bundle path '{relative}' is absolute or contains '..'; refusing it")
    return root / relative


def checked_file(root: Path, entry: dict[str, Any]) -> Path:
    path = safe_path(root, entry["path"])
    if not path.is_file():
        raise RunnerError(f"bundle file '{entry['path']}' is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise RunnerError(
            f"bundle file '{entry['path']}' fails its checksum: SHA-256 {digest[:12]}... != manifest "
            f"{entry['sha256'][:12]}...; refusing it"
        )
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        raise RunnerError(f"{root} is not a bundle: manifest.json not found")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def pick_artifact(manifest: dict[str, Any], path: str | None, kinds: tuple[str, ...]) -> dict[str, Any]:
    """The artifact named ``path``, or the first fp32 one of ``kinds``."""
    for artifact in manifest["artifacts"]:
        if (path is None and artifact["kind"] in kinds and artifact.get("precision", "fp32") == "fp32") or (
            path is not None and artifact["path"] == path
        ):
            if artifact["kind"] not in kinds:
                raise RunnerError(f"artifact '{artifact['path']}' is {artifact['kind']}; this runner reads {kinds}")
            return dict(artifact)
    wanted = path or f"an fp32 {'/'.join(kinds)} artifact"
    raise RunnerError(f"the manifest lists no {wanted}")


def _shape_text(shape: list[Any]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def check_inputs(manifest: dict[str, Any]) -> None:
    """Refuse golden inputs that do not match the inputs the manifest declares (name, dtype, shape; "batch" matches
    any first dimension), before anything runs: a mismatch would otherwise surface as a runtime's own cryptic
    error, or worse, as numbers computed from bytes read as the wrong type."""
    declared = {spec["name"]: spec for spec in manifest["inputs"]}
    golden = {entry["name"]: entry for entry in manifest["golden"]["inputs"]}
    for name in (name for name in declared if name not in golden):  # the first, in the manifest's order
        raise RunnerError(
            f"input '{name}': the manifest declares it but golden/ has no tensor of that name; refusing it"
        )
    for name, entry in golden.items():
        spec = declared.get(name)
        if spec is None:
            raise RunnerError(f"golden input '{name}' is not among the manifest's inputs; refusing it")
        if entry["dtype"] != spec["dtype"]:
            raise RunnerError(
                f"input '{name}': the manifest declares dtype {spec['dtype']}, the golden tensor is "
                f"{entry['dtype']}; refusing it"
            )
        want, got = spec["shape"], entry["shape"]
        if not all(isinstance(dim, int) and dim >= 0 for dim in got):
            raise RunnerError(f"golden input '{name}': shape {_shape_text(got)} is not a list of sizes; refusing it")
        if len(want) != len(got) or any(w != "batch" and w != g for w, g in zip(want, got, strict=True)):
            raise RunnerError(
                f"input '{name}': the manifest declares shape {_shape_text(want)}, the golden tensor is "
                f"{_shape_text(got)}; refusing it"
            )
        if entry["dtype"] not in NUMPY_DTYPES:
            raise RunnerError(f"dtype {entry['dtype']} is not supported by this runner")


def golden_inputs(root: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """The golden inputs, checksummed and checked against the manifest's declared inputs."""
    raw = {entry["name"]: checked_file(root, entry).read_bytes() for entry in manifest["golden"]["inputs"]}
    check_inputs(manifest)
    inputs = {}
    for entry in manifest["golden"]["inputs"]:
        dtype = np.dtype(NUMPY_DTYPES[entry["dtype"]])
        need = int(np.prod(entry["shape"])) * dtype.itemsize
        if len(raw[entry["name"]]) != need:
            raise RunnerError(
                f"golden input '{entry['name']}' holds {len(raw[entry['name']])} bytes, its shape "
                f"{_shape_text(entry['shape'])} and dtype {entry['dtype']} need {need}; refusing it"
            )
        array = np.frombuffer(raw[entry["name"]], dtype=dtype).astype(entry["dtype"])
        inputs[entry["name"]] = array.reshape(entry["shape"])
    return inputs


def time_batches(run: Callable[[dict[str, np.ndarray]], object], inputs: dict[str, np.ndarray]) -> list[dict]:
    """Median wall time of ``run`` at batch 1 and at the whole golden batch, after one warm-up call."""
    total = len(next(iter(inputs.values())))
    latencies = []
    for batch, iterations in sorted({(1, 20), (total, 5)}):
        feed = {name: value[:batch] for name, value in inputs.items()}
        run(feed)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            run(feed)
            times.append((time.perf_counter() - start) * 1000.0)
        latencies.append({"batch": batch, "median_ms": statistics.median(times), "iterations": iterations})
    return latencies


def check_output_name(name: str) -> str:
    """Refuse an output name that is not a plain file name: it becomes ``OUT_DIR/<name>.bin``."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise RunnerError(f"output name '{name}' is not a plain file name; refusing it")
    return name


def write_result(
    out_dir: Path,
    runtime: str,
    version: str,
    artifact: dict[str, Any],
    outputs: dict[str, np.ndarray],
    latency: list[dict],
    device: str = "cpu",
) -> Path:
    for name in outputs:
        check_output_name(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    described = []
    for name, array in outputs.items():
        dtype = str(array.dtype)
        file = f"{name}.bin"
        (out_dir / file).write_bytes(np.ascontiguousarray(array, dtype=NUMPY_DTYPES[dtype]).tobytes())
        described.append({"name": name, "path": file, "dtype": dtype, "shape": list(array.shape)})
    result = {
        "runtime": runtime,
        "version": version,
        "device": device,
        "artifact": artifact["path"],
        "precision": artifact.get("precision", "fp32"),
        "outputs": described,
        "latency": latency,
    }
    (out_dir / RESULT).write_text(json.dumps(result, indent=2) + "\n")
    return out_dir / RESULT


def runner_main(run: Callable[[Path, Path, str | None], Path], doc: str | None, argv: list[str] | None) -> int:
    """The command line every Python runner takes: ``BUNDLE OUT_DIR [--artifact PATH]``; prints the result file."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--artifact", help="bundle path of the artifact to run (default: the fp32 model)")
    args = parser.parse_args(argv)
    return main_guard(lambda: print(run(args.bundle, args.out_dir, args.artifact)))


def main_guard(run: Callable[[], None]) -> int:
    """Run a runner's main, turning a refusal into one line on stderr and exit code 2."""
    try:
        run()
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
