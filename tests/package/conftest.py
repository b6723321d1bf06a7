"""A digits bundle with its INT8 variant, shared by the hand-off tests (each writes its own output folder)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_bundle(digits_with_int8: Path) -> Path:
    """The session's digits bundle with the INT8 variant added: what the package targets hand over."""
    return digits_with_int8
