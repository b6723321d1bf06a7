"""Rust + the ``ort`` crate, loading ONNX Runtime's shared library at run time: the cargo crate in
``rust_runner/``, shipped into ``bundle/runners/rust/``.

Built once with ``cargo build --release --locked`` into the runner cache
(:func:`~torchport.runtimes.base.cached_build`); every build shares one cargo target folder beside it, so a changed
runner recompiles only itself, not its dependencies. The library is the one inside the ``onnxruntime`` wheel
unless ``ORT_DYLIB_PATH`` names another.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torchport.runtimes.base import (
    FIND_ORT_LIBRARY,
    copy_sources,
    first_missing_tool,
    ort_library_missing,
    ort_native_runtime,
    run_build,
)

BINARY = "torchport-runner"
README = """
# Rust runner (ort)

A cargo crate on the `ort` crate with `load-dynamic`: ONNX Runtime's shared library is loaded at run time from
`ORT_DYLIB_PATH`; nothing is downloaded at build or run time. It reads only `manifest.json` and the files it
names, checks every SHA-256 it uses (`sha2`), refuses paths that are absolute or contain `..`, checks the golden
inputs' names, dtypes and shapes against the manifest, runs them and writes `result.json` (`serde_json`) plus one
raw little-endian `<output>.bin` per output. Needs Rust 1.92+ (`rustup`, or `apt-get install cargo` where it is
new enough). From the bundle folder:

```sh
FIND_ORT_LIBRARY
cargo build --release --locked --manifest-path runners/rust/Cargo.toml
"${CARGO_TARGET_DIR:-runners/rust/target}/release/torchport-runner" . out
```

`ORT_DYLIB_PATH`
names the ONNX Runtime shared library: the first line takes the one inside the `onnxruntime` Python wheel
(`pip install onnxruntime`); to use your own ONNX Runtime release instead, download it and set
`ORT_DYLIB_PATH=/path/to/onnxruntime-linux-x64-1.xx.x/lib/libonnxruntime.so` (version 1.20 or newer).
`--artifact model.int8.onnx` runs another ONNX artifact. Exit code 2 with one line on stderr when the bundle is
refused (checksum, path, inputs) or the library is not found, 1 on any other failure.
""".replace("FIND_ORT_LIBRARY", FIND_ORT_LIBRARY)


def missing() -> str | None:
    return first_missing_tool({"cargo": "install Rust with rustup, or apt-get install cargo"}) or ort_library_missing()


def build(folder: Path) -> None:
    source = copy_sources(RUNTIME, folder)
    target = folder.parent / "rust-target"  # beside every build, shared: dependencies compile once
    cargo = shutil.which("cargo") or "cargo"
    run_build("Rust runner", [cargo, "build", "-q", "--release", "--locked"], source, {"CARGO_TARGET_DIR": str(target)})
    shutil.copy2(target / "release" / BINARY, folder / BINARY)


RUNTIME = ort_native_runtime(
    name="rust",
    engine="onnxruntime-rust",
    source_dir="rust_runner",
    readme=README,
    missing=missing,
    build=build,
    binary=BINARY,
)
