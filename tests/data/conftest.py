"""Every registered source gets a loadable config, so tests can parametrize over the whole registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from torchport.config import DataConfig

from .builders import FILE_WRITERS


@pytest.fixture
def config_for(tmp_path: Path) -> Callable[[str], DataConfig]:
    """A config for any registered source: bundled sets need no files, file sources get tmp_path data."""

    def make(source: str) -> DataConfig:
        writer = FILE_WRITERS.get(source)
        return writer(tmp_path) if writer else DataConfig(source=source)  # type: ignore[arg-type]

    return make
