"""C++ + LibTorch: ``runner.cpp`` loads ``model.pt2`` with ``AOTIModelPackageLoader``.

It is built with g++ against the LibTorch inside the installed torch wheel, once per source/torch version: the
binary is cached by :func:`~torchport.runtimes.base.cached_build`, so the slow compile (about a minute on two
cores) happens once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torchport.errors import TorchportError
from torchport.runtimes.base import HERE, Runtime, cached_build, run_build

README = """
# C++ runner (LibTorch + AOTInductor)

`runner BUNDLE OUT_DIR [--artifact model.pt2]` loads `model.pt2` with `torch::inductor::AOTIModelPackageLoader`,
runs the golden inputs and writes `result.json` and one raw little-endian `<output>.bin` per output. It checks
every SHA-256 it uses and refuses paths that are absolute or contain `..`. Besides LibTorch it needs two Debian
packages: nlohmann/json reads manifest.json and writes result.json, OpenSSL's libcrypto computes the SHA-256s
(`apt-get install nlohmann-json3-dev libssl-dev`). Build it with CMake against LibTorch (the comments in
CMakeLists.txt show how to use the one inside the torch wheel), or with g++ directly:

    T=$(python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
    g++ -std=c++17 -O1 runner.cpp -I$T/include -I$T/include/torch/csrc/api/include \\
        -L$T/lib -ltorch -ltorch_cpu -lc10 -lcrypto -Wl,-rpath,$T/lib -o runner

The LibTorch version must be the one that compiled model.pt2.
"""


def torch_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")


# The Debian packages runner.cpp needs besides LibTorch, each found by one header.
HEADERS = {
    "nlohmann-json3-dev": Path("/usr/include/nlohmann/json.hpp"),
    "libssl-dev": Path("/usr/include/openssl/evp.h"),
}


def missing() -> str | None:
    if compiler() is None:
        return "g++ is not on PATH (apt-get install g++)"
    absent = [str(header) for header in HEADERS.values() if not header.is_file()]
    if absent:
        return f"{', '.join(absent)} not found (apt-get install {' '.join(HEADERS)})"
    found = torch_dir()
    if found is None or not (found / "include" / "torch" / "csrc" / "inductor" / "aoti_package").is_dir():
        return "the torch wheel's LibTorch headers are missing"
    return None


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def build(folder: Path) -> None:
    """Compile runner.cpp against the wheel's LibTorch into ``folder/runner``."""
    torch_root = torch_dir()
    cxx = compiler()
    if torch_root is None or cxx is None:
        raise TorchportError(f"cannot build the C++ runner: {missing()}")
    lib = torch_root / "lib"
    argv = [
        cxx,
        "-std=c++17",
        "-O1",
        str(HERE / "runner.cpp"),
        f"-I{torch_root / 'include'}",
        f"-I{torch_root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        f'-DTORCHPORT_TORCH_VERSION="{_torch_version()}"',
        f"-L{lib}",
        "-ltorch",
        "-ltorch_cpu",
        "-lc10",
        "-lcrypto",
        f"-Wl,-rpath,{lib}",
        "-o",
        str(folder / "runner"),
    ]
    run_build("C++ runner", argv, folder)


def command(bundle: Path, runner_dir: Path, artifact: str, out: Path) -> list[str]:
    # the LibTorch it links and the compiler the user chose ($CXX): no compiler needs to run to find the binary
    binary = cached_build(RUNTIME, bundle, f"{_torch_version()} {os.environ.get('CXX', '')}", build) / "runner"
    return [str(binary), str(bundle), str(out), "--artifact", artifact]


RUNTIME = Runtime(
    name="cpp",
    engine="libtorch-aoti",
    kinds=("aoti",),
    precisions=("fp32",),
    files=("runner.cpp", "CMakeLists.txt"),
    readme=README,
    missing=missing,
    command=command,
    timeout_s=120.0,
)
