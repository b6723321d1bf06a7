"""Encoded features of a large table, on disk: written once, then read row by row by every run that needs them.

The file is keyed by what determines its bytes: the table's path, size and modification time, and the column
encodings learned from it. So the stages of one run (train, export, verify) and the ranks of a DDP job share one
file, a later run on the same table reuses it, and an edited table gets a new one. The first process to need
it writes it under an ``flock`` (the others wait, then read it), to a temporary name renamed into place, so a
killed writer never leaves a half-written file where a reader would find it. Deleting the cache folder is
always safe: it is rebuilt on the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from torchport.data.rows import NpyRows, write_npy
from torchport.errors import DataError, first_line
from torchport.tabular import ColumnEncoding

log = logging.getLogger("torchport.data")

CACHE_FORMAT = 1


def cache_root(configured: Path | None) -> Path:
    """``data.cache_dir``, else ``$TORCHPORT_CACHE_DIR``, else ``$XDG_CACHE_HOME/torchport`` or ``~/.cache``'s."""
    if configured is not None:
        return configured
    if os.environ.get("TORCHPORT_CACHE_DIR"):
        return Path(os.environ["TORCHPORT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "torchport"


def cached_features(
    table: Path,
    cache_dir: Path | None,
    columns: tuple[ColumnEncoding, ...],
    shape: tuple[int, int],
    parts: Iterator[np.ndarray],
) -> NpyRows:
    """``NpyRows`` over the table's encoded features, writing them from ``parts`` first unless already cached."""
    folder = cache_root(cache_dir) / "tables"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"data.cache_dir: cannot create {folder}: {first_line(exc, type(exc).__name__)}") from None
    path = folder / f"{table.stem}-{_key(table, columns, shape)}.npy"
    with _locked(path.with_suffix(".lock")):
        if not path.is_file():
            log.info("data: encoding %s (%d rows x %d features) into %s", table, shape[0], shape[1], path)
            partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
            try:
                write_npy(partial, parts, shape, np.dtype(np.float32))
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
    return NpyRows(path, "data.path", np.float32)


def _key(table: Path, columns: tuple[ColumnEncoding, ...], shape: tuple[int, int]) -> str:
    stat = table.stat()
    what = {
        "format": CACHE_FORMAT,
        "table": str(table.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "columns": [column.to_dict() for column in columns],
        "shape": list(shape),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """Held by one process at a time; the kernel drops it when its holder dies, however it dies."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
