"""C++ + LibTorch: ``runner.cpp`` loads ``model.pt2`` with ``AOTIModelPackageLoader``.

It is built with g++ against the LibTorch inside the installed torch wheel, once per source/torch version: the
binary is cached in ``$TORCHPORT_BUILD_DIR`` (default: ``build/`` in the bundle's run directory), so the slow
compile (about a minute on two cores) happens once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from torchport.errors import TorchportError
from torchport.runtimes.base import HERE, Runtime

README = """
# C++ runner (LibTorch + AOTInductor)

`runner BUNDLE OUT_DIR [--artifact model.pt2]` loads `model.pt2` with `torch::inductor::AOTIModelPackageLoader`,
runs the golden inputs and writes `result.json` and one raw little-endian `<output>.bin` per output. It checks
every SHA-256 it uses and refuses paths that are absolute or contain `..`. Build it with CMake against LibTorch
(the comments in CMakeLists.txt show how to use the one inside the torch wheel), or with g++ directly:

    T=$(python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
    g++ -std=c++17 -O1 runner.cpp -I$T/include -I$T/include/torch/csrc/api/include \\
        -L$T/lib -ltorch -ltorch_cpu -lc10 -Wl,-rpath,$T/lib -o runner

The LibTorch version must be the one that compiled model.pt2.
"""
BUILD_TIMEOUT_S = 600


def torch_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")


def missing() -> str | None:
    if compiler() is None:
        return "g++ is not on PATH (apt-get install g++)"
    found = torch_dir()
    if found is None or not (found / "include" / "torch" / "csrc" / "inductor" / "aoti_package").is_dir():
        return "the torch wheel's LibTorch headers are missing"
    return None


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def build_dir(bundle: Path) -> Path:
    explicit = os.environ.get("TORCHPORT_BUILD_DIR")
    return Path(explicit) if explicit else bundle.resolve().parent / "build"


def build(target_dir: Path) -> Path:
    """Compile runner.cpp into ``target_dir`` unless a binary for this source and torch version is there."""
    source = HERE / "runner.cpp"
    version = _torch_version()
    key = hashlib.sha256(source.read_bytes() + version.encode()).hexdigest()[:12]
    binary = target_dir / f"cpp-runner-{key}" / "runner"
    if binary.is_file():
        return binary
    torch_root = torch_dir()
    cxx = compiler()
    if torch_root is None or cxx is None:
        raise TorchportError(f"cannot build the C++ runner: {missing()}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    lib = torch_root / "lib"
    argv = [
        cxx,
        "-std=c++17",
        "-O1",
        str(source),
        f"-I{torch_root / 'include'}",
        f"-I{torch_root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        f'-DTORCHPORT_TORCH_VERSION="{version}"',
        f"-L{lib}",
        "-ltorch",
        "-ltorch_cpu",
        "-lc10",
        f"-Wl,-rpath,{lib}",
        "-o",
        str(partial),
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise TorchportError(f"building the C++ runner took over {BUILD_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        first = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr[-300:])
        raise TorchportError(f"building the C++ runner failed: {first}")
    partial.rename(binary)
    return binary


def command(bundle: Path, runner_dir: Path, artifact: str, out: Path) -> list[str]:
    return [str(build(build_dir(bundle))), str(bundle), str(out), "--artifact", artifact]


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
