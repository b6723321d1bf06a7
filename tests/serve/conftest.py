"""The module-scoped digits server for tests/serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import BODY_LIMIT, running_server


@pytest.fixture(scope="module")
def server(exported_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(
        exported_digits / "bundle", log, "--max-body-bytes", str(BODY_LIMIT), "--max-batch-delay-ms", "5"
    ) as port:
        yield port
