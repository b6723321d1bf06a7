"""Go + ``github.com/yalue/onnxruntime_go`` on ONNX Runtime's shared library: the Go module in ``go_runner/``,
shipped into ``bundle/runners/go/``.

Built once with ``go build`` into the runner cache (:func:`~torchport.runtimes.base.cached_build`); Go keeps the
downloaded modules and compiled packages in its own caches. The library is the one inside the ``onnxruntime``
wheel unless ``ORT_DYLIB_PATH`` names another.
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

README = """
# Go runner (onnxruntime_go)

A Go module on `github.com/yalue/onnxruntime_go`, which loads ONNX Runtime's shared library at run time (cgo,
so a C compiler is needed to build). It reads only `manifest.json` and the files it names, checks every SHA-256
it uses, refuses paths that are absolute or contain `..`, checks the golden inputs' names, dtypes and shapes
against the manifest, runs them and writes `result.json` plus one raw little-endian `<output>.bin` per output.
Needs Go 1.22+ and gcc (`apt-get install golang-go gcc`). From the bundle folder:

```sh
FIND_ORT_LIBRARY
(cd runners/go && go build -o torchport-runner .)
runners/go/torchport-runner . out
```

`ORT_DYLIB_PATH` names the ONNX Runtime shared library. The first line takes the one inside the `onnxruntime`
Python wheel (`pip install onnxruntime`); to use your own ONNX Runtime release instead, download it and set
`ORT_DYLIB_PATH=/path/to/onnxruntime-linux-x64-1.xx.x/lib/libonnxruntime.so` (1.24 or newer: onnxruntime_go
v1.27 asks for C API version 24). `--artifact model.int8.onnx` runs another ONNX artifact. Exit code 2 with one
line on stderr when the bundle is refused (checksum, path, inputs) or the library is not found, 1 on any other
failure.
""".replace("FIND_ORT_LIBRARY", FIND_ORT_LIBRARY)


def missing() -> str | None:
    return first_missing_tool({"go": "apt-get install golang-go", "gcc": "apt-get install gcc; cgo needs it"}) or (
        ort_library_missing()
    )


def build(folder: Path) -> None:
    source = copy_sources(RUNTIME, folder)
    argv = [shutil.which("go") or "go", "build", "-mod=readonly", "-o", str(folder / "runner"), "."]
    run_build("Go runner", argv, source, {"CGO_ENABLED": "1"})


RUNTIME = ort_native_runtime(
    name="go",
    engine="onnxruntime-go",
    source_dir="go_runner",
    readme=README,
    missing=missing,
    build=build,
    binary="runner",
)
