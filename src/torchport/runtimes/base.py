"""What conformance needs to know about one runtime: which artifacts it runs, what it needs, how to start it."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchport.errors import TorchportError

HERE = Path(__file__).resolve().parent
BUILD_TIMEOUT_S = 900


class RuntimeMissing(TorchportError):
    """A requested runtime's prerequisite (node, chromium, g++, a package) is missing: exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Runtime:
    name: str
    engine: str
    kinds: tuple[str, ...]
    precisions: tuple[str, ...]
    # files shipped into the bundle's folder for this runtime (paths relative to HERE / source_dir, kept as they
    # are), and that folder's README text ("" when README.md is one of the files)
    files: tuple[str, ...]
    readme: str
    missing: Callable[[], str | None]
    # (bundle, its folder inside the bundle, artifact path -- or the server's URL when over_server --, output
    # folder) -> argv
    command: Callable[[Path, Path, str, Path], list[str]]
    env: Callable[[], dict[str, str]] = field(default=lambda: {})
    timeout_s: float = 120.0
    # the folder, relative to this package's, that holds the project (a Maven, Go or cargo project keeps its layout)
    source_dir: str = ""
    # a client of `torchport serve` (Open Inference Protocol v2), not an in-process runner: it needs a server URL
    over_server: bool = False
    # where it lands in the bundle; default runners/<name>
    bundle_folder: str = ""


def install_files(runtime: Runtime, bundle: Path) -> Path:
    """Copy the runtime's files into its bundle folder (``runners/<name>/`` unless it says otherwise), with its
    README, and return that folder."""
    target = bundle / (runtime.bundle_folder or f"runners/{runtime.name}")
    for name in runtime.files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / runtime.source_dir / name, target / name)
    target.mkdir(parents=True, exist_ok=True)
    if runtime.readme:
        (target / "README.md").write_text(runtime.readme.strip() + "\n")
    return target


def build_dir(bundle: Path) -> Path:
    """Where compiled runners are cached: $TORCHPORT_BUILD_DIR, else ``build/`` in the bundle's run directory."""
    explicit = os.environ.get("TORCHPORT_BUILD_DIR")
    return Path(explicit) if explicit else bundle.resolve().parent / "build"


def cached_build(runtime: Runtime, bundle: Path, salt: str, build: Callable[[Path], None]) -> Path:
    """The folder holding ``runtime``'s compiled runner, built by ``build(folder)`` only when no folder for these
    sources (and ``salt``, e.g. the LibTorch version a binary links) exists yet, so a second conformance run never
    rebuilds. The key needs no compiler to compute: a cached runner runs where no build tool is left.

    The build writes into a temporary sibling that is renamed into place only when it succeeds: an interrupted
    or failed build leaves nothing that looks finished.
    """
    digest = hashlib.sha256(salt.encode())
    for name in sorted(runtime.files):
        digest.update(name.encode() + b"\0" + (HERE / runtime.source_dir / name).read_bytes())
    root = build_dir(bundle)
    folder = root / f"{runtime.name}-runner-{digest.hexdigest()[:12]}"
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    what = "client" if runtime.over_server else "runner"
    print(f"building the {runtime.name} {what} once into {folder} ...", file=sys.stderr, flush=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        build(partial)
        try:
            partial.rename(folder)
        except OSError:  # another process finished the same build first: use that one
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def copy_sources(runtime: Runtime, folder: Path) -> Path:
    """The runner's project copied into ``folder/src`` (so its build outputs never land in the package)."""
    source = folder / "src"
    for name in runtime.files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / runtime.source_dir / name, source / name)
    return source


def run_process_group(
    argv: list[str], timeout_s: float, env: dict[str, str], cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run a runner or a build in its own process group; on timeout SIGTERM the whole group (the browser runner
    then closes Chromium; cargo's and Maven's children go too), and SIGKILL it if it is still there after a few
    seconds. Raises subprocess.TimeoutExpired after the group is gone."""
    with subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            raise
        return proc.returncode, stdout, stderr


def run_build(what: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run one build command; a failure is one line naming the runner and the compiler's first error."""
    try:
        code, stdout, stderr = run_process_group(argv, BUILD_TIMEOUT_S, {**os.environ, **(env or {})}, cwd)
    except subprocess.TimeoutExpired:
        raise TorchportError(f"building the {what} took over {BUILD_TIMEOUT_S} s") from None
    if code != 0:
        lines = (stderr + stdout).splitlines()
        first = next((line for line in lines if "error" in line.lower()), "\n".join(lines[-3:]))
        raise TorchportError(f"building the {what} failed ({Path(argv[0]).name}): {first.strip()[:300]}")


def ort_library() -> Path | None:
    """The ONNX Runtime shared library for the C-API runners (Go, Rust): $ORT_DYLIB_PATH, else the one inside the
    installed ``onnxruntime`` wheel (``onnxruntime/capi/libonnxruntime.so.*``)."""
    explicit = os.environ.get("ORT_DYLIB_PATH")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        return None
    capi = Path(spec.origin).parent / "capi"
    found = sorted(glob.glob(str(capi / "libonnxruntime.so*")) + glob.glob(str(capi / "libonnxruntime.*dylib")))
    return Path(found[-1]) if found else None


# The README line that points the Go and Rust runners at the ONNX Runtime inside the onnxruntime wheel, unless the
# user already set ORT_DYLIB_PATH to a library of their own.
FIND_ORT_LIBRARY = (
    "export ORT_DYLIB_PATH=\"${ORT_DYLIB_PATH:-$(python3 -c 'import onnxruntime, pathlib; "
    'print(next(pathlib.Path(onnxruntime.__file__).parent.glob("capi/libonnxruntime.so*")))\')}"'
)


def ort_library_missing() -> str | None:
    if ort_library() is None:
        if os.environ.get("ORT_DYLIB_PATH"):
            return f"ORT_DYLIB_PATH={os.environ['ORT_DYLIB_PATH']} is not a file"
        return "the ONNX Runtime shared library was not found (pip install onnxruntime, or set ORT_DYLIB_PATH)"
    return None


def ort_library_env() -> dict[str, str]:
    """The environment of a C-API runner: ORT_DYLIB_PATH, the variable the Go and Rust runners read."""
    found = ort_library()
    return {"ORT_DYLIB_PATH": str(found)} if found else {}


def first_missing_tool(tools: dict[str, str]) -> str | None:
    """'X is not on PATH (how to install it)' for the first of ``tools`` (command -> install hint) not found."""
    for tool, hint in tools.items():
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH ({hint})"
    return None


def node_modules() -> Path | None:
    """The node_modules folder holding the pinned npm packages: $TORCHPORT_NODE_MODULES, or one above cwd or here."""
    explicit = os.environ.get("TORCHPORT_NODE_MODULES")
    if explicit:
        return Path(explicit) if (Path(explicit) / "onnxruntime-node").is_dir() else None
    for start in (Path.cwd().resolve(), HERE):
        for folder in (start, *start.parents):
            if (folder / "node_modules" / "onnxruntime-node" / "package.json").is_file():
                return folder / "node_modules"
    return None


def node_modules_env() -> dict[str, str]:
    """The environment of a Node.js runner: where the pinned npm packages are (runner.mjs and the browser server
    resolve onnxruntime-* from it)."""
    found = node_modules()
    return {"TORCHPORT_NODE_MODULES": str(found)} if found else {}


def which_node() -> str | None:
    return shutil.which("node")


def project_files(source_dir: str) -> tuple[str, ...]:
    """Every file of the runner project in ``HERE / source_dir`` (relative, '/'-separated), build outputs aside."""
    root = HERE / source_dir
    skipped = {"target", "build", "out"}
    return tuple(
        sorted(
            path.relative_to(root).as_posix()
            for path in root.rglob("*")
            if path.is_file() and not skipped.intersection(path.relative_to(root).parts[:-1])
        )
    )


def ort_native_runtime(
    *,
    name: str,
    engine: str,
    source_dir: str,
    readme: str,
    missing: Callable[[], str | None],
    build: Callable[[Path], None],
    binary: str,
    salt: Callable[[], str] = lambda: "",
) -> Runtime:
    """A compiled runner on ONNX Runtime's shared library (C, Go, Rust): built once by ``build`` into the runner
    cache (keyed by its sources and ``salt()``, what else shapes the binary), run as ``binary BUNDLE OUT --artifact
    PATH`` with ORT_DYLIB_PATH set, on every ONNX artifact."""

    def command(bundle: Path, runner_dir: Path, artifact: str, out: Path) -> list[str]:
        built = cached_build(runtime, bundle, salt(), build) / binary
        return [str(built), str(bundle), str(out), "--artifact", artifact]

    runtime = Runtime(
        name=name,
        engine=engine,
        kinds=("onnx",),
        precisions=("fp32", "fp16", "int8"),
        files=project_files(source_dir),
        source_dir=source_dir,
        readme=readme,
        missing=missing,
        command=command,
        env=ort_library_env,
    )
    return runtime
