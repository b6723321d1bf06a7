"""The compiled runners side by side: build times (cold, rebuilt, cached) and batch-1 latency against Python ORT.

``python benchmarks/runners.py BUNDLE [--rounds 3] [--no-builds]``

1. Builds: for each compiled runner and client, ``cached_build`` into a fresh folder with empty package caches
   (Maven repository, GOMODCACHE and GOCACHE, CARGO_HOME: downloads included) — "cold"; again with the machine's
   warm caches — "rebuilt"; and the second lookup — "cached" (what every later conformance run pays).
2. Latency: ``--rounds`` conformance runs of python, cpp, c, java, go and rust on BUNDLE's fp32 model; per runtime the
   median of the rounds' batch-1 medians, and its ratio to Python ONNX Runtime's measured in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from torchport.clients import CSHARP, JAVA, _csharp_build, _java_build
from torchport.runtimes import c, cpp, go, java, rust
from torchport.runtimes.base import Runtime, cached_build
from torchport.runtimes.conformance import choose, run_conformance

IN_PROCESS = "python,cpp,c,java,go,rust"


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def builds(root: Path) -> None:
    cold_caches = {
        "GOCACHE": str(root / "gocache"),
        "GOMODCACHE": str(root / "gomod"),
        "CARGO_HOME": str(root / "cargo"),
        "MAVEN_OPTS": f"-Dmaven.repo.local={root / 'm2'}",
    }
    table: list[tuple[str, Runtime, str, Callable[[Path], None]]] = [
        ("cpp", cpp.RUNTIME, cpp._torch_version(), cpp.build),
        ("c", c.RUNTIME, "", c.build),
        ("java", java.RUNTIME, "", java.build),
        ("go", go.RUNTIME, "", go.build),
        ("rust", rust.RUNTIME, "", rust.build),
        ("csharp client", CSHARP, "", _csharp_build),
        ("java client", JAVA, "", _java_build),
    ]
    print(f"{'runner':14s} {'cold':>8s} {'rebuilt':>8s} {'cached':>9s}")
    for name, runtime, salt, build in table:
        cells = []
        for label, caches in (("cold", cold_caches), ("rebuilt", {})):
            with environment({**caches, "TORCHPORT_BUILD_DIR": str(root / f"{label}-{runtime.name}")}):
                start = time.perf_counter()
                cached_build(runtime, root, salt, build)
                cells.append(time.perf_counter() - start)
                start = time.perf_counter()
                cached_build(runtime, root, salt, build)
                cached = time.perf_counter() - start
        print(f"{name:14s} {cells[0]:7.1f}s {cells[1]:7.1f}s {cached * 1000:7.2f}ms", flush=True)


def latency(bundle: Path, rounds: int) -> None:
    chosen, _ = choose(IN_PROCESS)
    per_runtime: dict[str, list[float]] = {}
    for _ in range(rounds):
        for result in run_conformance(bundle, chosen, explicit=True, save=False):
            if result.precision == "fp32" and result.artifact in ("model.onnx", "model.pt2"):
                batch1 = next(entry.median_ms for entry in result.latency if entry.batch == 1)
                per_runtime.setdefault(result.runtime, []).append(batch1)
    python = statistics.median(per_runtime["python"])
    print(f"\nbatch-1 latency, median of {rounds} conformance runs ({bundle}):")
    for name, values in per_runtime.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.3f}" for v in values)
        print(f"{name:8s} {median:.3f} ms  {median / python:.2f}x python ORT  (runs: {runs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-builds", action="store_true", help="only the latency comparison")
    args = parser.parse_args()
    if not args.no_builds:
        with tempfile.TemporaryDirectory(prefix="torchport-builds-") as tmp:
            builds(Path(tmp))
    latency(args.bundle, args.rounds)


if __name__ == "__main__":
    main()
