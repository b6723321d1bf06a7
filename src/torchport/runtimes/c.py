"""C + ONNX Runtime's C API, loading ONNX Runtime's shared library at run time: the one-file C11 runner in
``c_runner/`` (jansson for JSON, OpenSSL's libcrypto for SHA-256), shipped into ``bundle/runners/c/``.

Built once with its Makefile into the runner cache (:func:`~torchport.runtimes.base.cached_build`). The binary
links no ONNX Runtime: it only needs the C API header at build time, from ``ORT_INCLUDE_DIR`` (an ONNX Runtime
release's ``include/``), else the copy at the root of the Go module ``github.com/yalue/onnxruntime_go`` that
``go mod download`` fetches (C API version 24). At run time it dlopen()s the library named by ``ORT_DYLIB_PATH``,
the one inside the ``onnxruntime`` wheel unless that variable names another.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from torchport.errors import TorchportError
from torchport.runtimes.base import (
    FIND_ORT_LIBRARY,
    copy_sources,
    first_missing_tool,
    ort_library_missing,
    ort_native_runtime,
    run_build,
)

BINARY = "torchport-runner"
HEADER = "onnxruntime_c_api.h"
# the Go module whose root holds onnxruntime_c_api.h (C API version 24: ONNX Runtime 1.24 or newer)
GO_MODULE = "github.com/yalue/onnxruntime_go@v1.27.0"
# headers the runner includes, with the Debian package that installs each
SYSTEM_HEADERS = {"/usr/include/jansson.h": "libjansson-dev", "/usr/include/openssl/evp.h": "libssl-dev"}

README = """
# C runner (ONNX Runtime C API)

One C11 file, `runner.c`, on ONNX Runtime's C API. The ONNX Runtime shared library is loaded at run time
(`dlopen`) from `ORT_DYLIB_PATH`, so the binary links no ONNX Runtime and nothing is downloaded at run time. It
reads only `manifest.json` (jansson) and the files it names, checks every SHA-256 it uses (OpenSSL's libcrypto),
refuses paths that are absolute or contain `..`, checks the golden inputs' names, dtypes and shapes against the
manifest, runs them and writes `result.json` plus one raw little-endian `<output>.bin` per output. Needs a C
compiler, make, jansson and OpenSSL's headers (`apt-get install gcc make libjansson-dev libssl-dev`), and Go to
fetch ONNX Runtime's C API header (below). From the bundle folder:

```sh
FIND_ORT_LIBRARY
make -C runners/c
runners/c/torchport-runner . out
```

Building needs only ONNX Runtime's C API header, `onnxruntime_c_api.h`. By default `make` takes the copy at the
root of the Go module `github.com/yalue/onnxruntime_go` v1.27.0 (`go mod download`, so `go` must be on PATH, or
the module already in Go's cache); `make -C runners/c ORT_INCLUDE_DIR=/path/to/include` takes another.
`ORT_DYLIB_PATH` names the shared library: the first line takes the one inside the `onnxruntime` Python wheel
(`pip install onnxruntime`). To use your own ONNX Runtime release instead, download and unpack it
(`onnxruntime-linux-x64-1.xx.x.tgz`, version 1.24 or newer: the runner asks for C API version 24) and point both
at it: `ORT_INCLUDE_DIR=<release>/include` when building, and
`ORT_DYLIB_PATH=<release>/lib/libonnxruntime.so` when running. `CMakeLists.txt` builds the same binary with
CMake (`cmake -S runners/c -B build-c -DORT_INCLUDE_DIR=...`). `--artifact model.int8.onnx` runs another ONNX
artifact. Exit code 2 with one line on stderr when the bundle is refused (checksum, path, inputs) or the library
is not found, 1 on any other failure.
""".replace("FIND_ORT_LIBRARY", FIND_ORT_LIBRARY)


def _header_missing() -> str | None:
    """Why ONNX Runtime's C API header cannot be had, or None: ORT_INCLUDE_DIR must hold it, else go fetches it."""
    explicit = os.environ.get("ORT_INCLUDE_DIR")
    if explicit:
        if not (Path(explicit) / HEADER).is_file():
            return f"ORT_INCLUDE_DIR={explicit} holds no {HEADER}"
        return None
    if shutil.which("go") is None:
        return (
            f"ONNX Runtime's C API header ({HEADER}) was not found: set ORT_INCLUDE_DIR to an ONNX Runtime "
            "release's include folder, or put go on PATH to download it (apt-get install golang-go)"
        )
    return None


def _system_header_missing() -> str | None:
    for header, package in SYSTEM_HEADERS.items():
        if not Path(header).is_file():
            return f"{header} is missing (apt-get install {package})"
    return None


def missing() -> str | None:
    return (
        first_missing_tool({"cc": "apt-get install gcc", "make": "apt-get install make"})
        or _system_header_missing()
        or _header_missing()
        or ort_library_missing()
    )


def include_dir(cwd: Path) -> Path:
    """The folder holding onnxruntime_c_api.h: $ORT_INCLUDE_DIR, else the Go module's root (downloaded once into
    Go's module cache; ``cwd`` is any folder outside a Go module)."""
    explicit = os.environ.get("ORT_INCLUDE_DIR")
    if explicit:
        return Path(explicit)
    go = shutil.which("go") or "go"
    try:
        proc = subprocess.run(
            [go, "mod", "download", "-json", GO_MODULE],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        info = json.loads(proc.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise TorchportError(f"cannot download ONNX Runtime's C API header ({GO_MODULE}): {exc}") from None
    folder = info.get("Dir")
    if proc.returncode != 0 or not folder or not (Path(folder) / HEADER).is_file():
        reason = info.get("Error") or proc.stderr.strip() or f"no {HEADER} in {folder}"
        raise TorchportError(f"cannot download ONNX Runtime's C API header ({GO_MODULE}): {reason}")
    return Path(folder)


def build(folder: Path) -> None:
    source = copy_sources(RUNTIME, folder)
    include = include_dir(folder)
    make = shutil.which("make") or "make"
    run_build("C runner", [make, "-s", f"ORT_INCLUDE_DIR={include}", BINARY], source)
    shutil.copy2(source / BINARY, folder / BINARY)


RUNTIME = ort_native_runtime(
    name="c",
    engine="onnxruntime-c",
    source_dir="c_runner",
    readme=README,
    missing=missing,
    build=build,
    binary=BINARY,
    salt=lambda: os.environ.get("ORT_INCLUDE_DIR", ""),  # which C API header it compiles against
)
