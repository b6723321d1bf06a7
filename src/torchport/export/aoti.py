"""AOTInductor package (``model.pt2``) for C++ deployment through LibTorch's AOTIModelPackageLoader."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import torch

from torchport.errors import TorchportError, first_line
from torchport.export.deployable import TrainedRun


def find_cxx() -> str | None:
    """The C++ compiler Inductor will call, or None (then the .pt2 is skipped with a clear line)."""
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def export_aoti(run: TrainedRun, path: Path) -> Path:
    """Compile the model ahead of time with a dynamic batch; a few tens of seconds on two cores."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            program = torch.export.export(run.module, (run.example_input(),), dynamic_shapes={"x": {0: batch}})
            path.parent.mkdir(parents=True, exist_ok=True)
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as exc:
        detail = first_line(exc, type(exc).__name__)
        raise TorchportError(f"AOTInductor export of {run.run_dir} failed: {detail}") from exc
    return path
