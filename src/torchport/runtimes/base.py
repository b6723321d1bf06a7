"""What conformance needs to know about one runtime: which artifacts it runs, what it needs, how to start it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchport.errors import TorchportError

HERE = Path(__file__).resolve().parent


class RuntimeMissing(TorchportError):
    """A requested runtime's prerequisite (node, chromium, g++, a package) is missing: exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Runtime:
    name: str
    engine: str
    kinds: tuple[str, ...]
    precisions: tuple[str, ...]
    # files beside the modules that are shipped into bundle/runners/<name>/, and that folder's README text
    files: tuple[str, ...]
    readme: str
    missing: Callable[[], str | None]
    # (bundle, runner folder inside the bundle, artifact path, output folder) -> argv
    command: Callable[[Path, Path, str, Path], list[str]]
    env: Callable[[], dict[str, str]] = field(default=lambda: {})
    timeout_s: float = 120.0


def install_files(runtime: Runtime, bundle: Path) -> Path:
    """Copy the runner's files into ``bundle/runners/<name>/`` (with its README) and return that folder."""
    target = bundle / "runners" / runtime.name
    target.mkdir(parents=True, exist_ok=True)
    for name in runtime.files:
        shutil.copyfile(HERE / name, target / Path(name).name)
    (target / "README.md").write_text(runtime.readme.strip() + "\n")
    return target


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
