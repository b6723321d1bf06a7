"""Configs shipped inside the package, so `torchport run` with no argument works from any folder."""

from __future__ import annotations

from pathlib import Path

from torchport.errors import UsageError

HERE = Path(__file__).parent


def example_path(name: str) -> Path:
    path = HERE / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in HERE.glob("*.yaml")))
        raise UsageError(f"no bundled example '{name}' (available: {available})")
    return path
