"""CSV and Parquet tables, read a chunk at a time so that a table larger than memory can be trained on.

A table is read twice, ``data.chunk_rows`` rows at a time, and never whole. The first pass (``_survey``) picks
the columns, counts the rows and missing values, collects the targets (one value per row: small) and the
distinct values of the categorical columns. The second pass encodes each chunk into float32 features with the
very function the server and ``Bundle.predict`` use (``torchport.tabular.encode_rows``), into one array when
the features fit in memory (``data.in_memory``), else into a ``.npy`` file in the cache (``table_cache.py``)
that training reads row by row, in whatever order the sampler chose.

Column kinds are decided by the first chunk; a later chunk that turns a number column into text is named,
since encoding it as a number would fail halfway through a long read.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from torchport.config import DataConfig
from torchport.data.rows import Array
from torchport.data.sources import MEMORY_LIMIT_BYTES, RawData, existing
from torchport.data.table_cache import cached_features
from torchport.errors import DataError, first_line, suggest
from torchport.tabular import ColumnEncoding, encode_rows, feature_names, learn_encodings

if TYPE_CHECKING:
    import pandas as pd


def read_csv(cfg: DataConfig) -> RawData:
    path = existing(cfg.path, "data.path", cfg.source)
    return _read_table(TableFile(path, "CSV", cfg.chunk_rows), cfg, f"csv:{path}")


def read_parquet(cfg: DataConfig) -> RawData:
    path = existing(cfg.path, "data.path", cfg.source)
    return _read_table(TableFile(path, "Parquet", cfg.chunk_rows), cfg, f"parquet:{path}")


CHUNK_BYTES = 8 * 2**20  # under data.chunk_rows: null, a chunk holds about this many bytes of values
MAX_CHUNK_ROWS = 65_536
PARQUET_READ_BYTES = 64 * 2**10  # Arrow reads each column this much at a time, not a row group's column whole


@dataclass
class TableFile:
    """One CSV or Parquet file, read as data frames of at most ``chunk_rows`` rows (``None``: sized by bytes)."""

    path: Path
    kind: str  # "CSV" or "Parquet"
    chunk_rows: int | None

    def rows_per_chunk(self, columns: int) -> int:
        """``chunk_rows``, else as many rows of ``columns`` 4-byte values as fill ``CHUNK_BYTES``: a fixed row count
        would make a chunk of a wide table hundreds of MiB, and Arrow holds several times a chunk while reading."""
        if self.chunk_rows is not None:
            return self.chunk_rows
        return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // (4 * max(columns, 1))))

    def column_names(self) -> list[str]:
        with self._reading():
            if self.kind == "CSV":
                import pandas as pd

                return [str(name) for name in pd.read_csv(self.path, nrows=0).columns]
            import pyarrow.parquet as pq

            with pq.ParquetFile(self.path) as table:
                schema = table.schema_arrow
            index = {str(name) for name in (schema.pandas_metadata or {}).get("index_columns", [])}
            # A DataFrame saved with its index stores it as a column; pandas reads it back as the index, not data.
            return [str(name) for name in schema.names if str(name) not in index]

    def frames(self, names: list[str]) -> Iterator[pd.DataFrame]:
        """Each chunk of the columns ``names``, in file order; a read error is one line naming the file."""
        with self._reading():
            for frame in self._chunks(names):
                frame.columns = [str(column) for column in frame.columns]
                yield frame

    def _chunks(self, names: list[str]) -> Iterator[pd.DataFrame]:
        if self.kind == "CSV":
            import pandas as pd

            with pd.read_csv(self.path, usecols=names, chunksize=self.rows_per_chunk(len(names))) as reader:
                yield from reader
            return
        import pyarrow.parquet as pq

        # pre_buffer (pyarrow's default) keeps every row group read so far buffered: memory grows with the file.
        # buffer_size streams each column chunk instead of reading it whole: a row group is all of them at once.
        with _arrow_on_malloc():  # the reader takes the default pool when it is made
            table = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=PARQUET_READ_BYTES)
        with table:
            for batch in table.iter_batches(batch_size=self.rows_per_chunk(len(names)), columns=names):
                # One block per column: number columns stay views of Arrow's buffers instead of being copied.
                yield batch.to_pandas(split_blocks=True, memory_pool=_read_pool())

    def _reading(self) -> _ReadErrors:
        return _ReadErrors(self.path, self.kind)


@contextmanager
def _arrow_on_malloc() -> Iterator[None]:
    """Arrow's default pool is the C library's malloc while a Parquet reader is made (it keeps the pool it was made
    with), so that ``release_freed_memory`` can give back what the read freed. Arrow's own allocator (mimalloc) kept
    about 120 MiB that a pass had freed for the rest of the process, even after ``release_unused``, on top of every
    later phase's peak. The ``torchport`` command makes malloc Arrow's default for everything (``cli_exit.py``);
    a user's own ARROW_DEFAULT_MEMORY_POOL is left alone."""
    import pyarrow as pa

    previous = pa.default_memory_pool()
    pa.set_memory_pool(_read_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _read_pool() -> Any:
    """The pool a chunk is converted with: the user's default where they chose one, else malloc (see above)."""
    import pyarrow as pa

    return pa.default_memory_pool() if "ARROW_DEFAULT_MEMORY_POOL" in os.environ else pa.system_memory_pool()


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing to do): freed chunks
    of a table stay in the process's resident memory otherwise."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # no such C library function (musl, macOS), or no CDLL(None)
        return
    trim(0)


class _ReadErrors:
    """Parser, encoding and Arrow errors all derive from OSError or ValueError: each becomes one line."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = path, kind

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and isinstance(exc, (OSError, ValueError)) and not isinstance(exc, DataError):
            reason = first_line(exc, type(exc).__name__)
            raise DataError(f"data.path: cannot read {self.path} as {self.kind}: {reason}") from None


@dataclass
class Survey:
    """What the first pass learned: everything but the features themselves."""

    rows: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    targets: list[np.ndarray] = field(default_factory=list)
    distinct: dict[str, list[Any]] = field(default_factory=dict)  # categorical column -> its values, per chunk


def _read_table(table: TableFile, cfg: DataConfig, source: str) -> RawData:
    names = table.column_names()
    target = _pick_target(cfg.target, names, table.path)
    features = _pick_features(cfg.features, target, names, table.path)
    categorical, survey = _first_pass(table, cfg, features, target)
    release_freed_memory()  # the pass's chunks are all gone now: their pages would stay resident for the whole run
    _check_missing(survey, target, table.path)
    try:
        columns = learn_encodings(survey_columns(survey, features), features, categorical)
    except DataError as exc:
        raise DataError(f"data.features: {exc} (in {table.path})") from None
    x = _features(table, cfg, columns, survey.rows, [*features, target])
    release_freed_memory()
    y = np.concatenate(survey.targets)
    return RawData(x, y, feature_names(columns), source, "data.features", "data.target", columns)


def _first_pass(table: TableFile, cfg: DataConfig, features: list[str], target: str) -> tuple[set[str], Survey]:
    """The categorical columns (the first chunk's kinds decide) and the survey of every chunk."""
    frames = table.frames([*features, target])
    first = next(frames, None)
    if first is None or len(first) == 0:
        raise DataError(f"data.path: {table.path} has no rows")
    categorical = _pick_categorical(cfg.categorical, features, first)
    kinds = {name: _column_kind(first[name]) for name in features}
    # No name keeps the first chunk once it is surveyed: its columns are views of Arrow's buffers, which would stay
    # allocated for the rest of the pass. (An iterator over the list, not the list: chain keeps its arguments.)
    chunks = itertools.chain(iter([first]), frames)
    del first
    return categorical, _survey(chunks, kinds, target, categorical, table.path)


def survey_columns(survey: Survey, features: list[str]) -> dict[str, Any]:
    """Each feature column's distinct values (categorical) for ``learn_encodings``; numbers need none."""
    return {name: np.concatenate(survey.distinct[name]) if name in survey.distinct else [] for name in features}


def _survey(
    frames: Iterator[pd.DataFrame], kinds: dict[str, str | None], target: str, categorical: set[str], path: Path
) -> Survey:
    import pandas as pd

    survey = Survey(distinct={name: [] for name in categorical})
    for frame in frames:
        for name, count in frame.isna().sum().items():
            survey.missing[str(name)] = survey.missing.get(str(name), 0) + int(count)
        _check_kinds(frame, kinds, categorical, survey.rows, path)
        for name in categorical:
            survey.distinct[name].append(pd.unique(frame[name].dropna().astype(object)))
        # A copy: a view would keep the chunk's Arrow buffers (and the allocator pages around them) for the whole read.
        survey.targets.append(_column_values(frame[target]).copy())
        survey.rows += len(frame)
    return survey


def _check_kinds(
    frame: pd.DataFrame, kinds: dict[str, str | None], categorical: set[str], row: int, path: Path
) -> None:
    for name, kind in kinds.items():
        if name in categorical or kind != "numeric":
            continue
        if _column_kind(frame[name]) != "numeric":
            raise DataError(
                f"data.categorical: column '{name}' holds numbers in the first chunk of {path} but "
                f"{frame[name].dtype} values in the chunk from row {row}; list it in data.categorical"
            )


def _features(
    table: TableFile, cfg: DataConfig, columns: tuple[ColumnEncoding, ...], rows: int, names: list[str]
) -> Array:
    """The encoded features: one array in memory, or rows read on demand from the cache."""
    width = len(feature_names(columns))
    parts = _encoded(table.frames(names), columns, table.path)
    in_memory = cfg.in_memory if cfg.in_memory != "auto" else rows * width * 4 <= MEMORY_LIMIT_BYTES
    if not in_memory:
        return cached_features(table.path, cfg.cache_dir, columns, (rows, width), parts)
    x = np.empty((rows, width), dtype=np.float32)
    filled = 0
    for part in parts:
        if filled + len(part) > rows:
            raise DataError(f"data.path: {table.path} changed while it was read; read it again")
        x[filled : filled + len(part)] = part
        filled += len(part)
    if filled != rows:
        raise DataError(f"data.path: {table.path} changed while it was read; read it again")
    return x


def _encoded(frames: Iterator[pd.DataFrame], columns: tuple[ColumnEncoding, ...], path: Path) -> Iterator[np.ndarray]:
    """Each chunk as float32 features; a value that is not finite is named by its row."""
    row = 0
    for frame in frames:
        try:
            part = encode_rows(frame, columns)  # the very function Bundle.predict and the server encode rows with
        except DataError as exc:
            raise DataError(f"data.features: {exc} (in {path})") from None
        bad = ~np.isfinite(part).all(axis=1)
        if bad.any():
            raise DataError(
                f"data.features: row {row + int(np.argmax(bad))} of {path} holds an infinite value; "
                "fix or drop it first"
            )
        yield part
        row += len(frame)


def _check_missing(survey: Survey, target: str, path: Path) -> None:
    """Dropping rows silently would change what the model learns from; the user decides instead."""
    bad = [(name, count) for name, count in survey.missing.items() if count > 0]
    if not bad:
        return
    name, count = bad[0]
    key = "data.target" if name == target else "data.features"
    others = f" (and {len(bad) - 1} more column(s) with missing values)" if len(bad) > 1 else ""
    raise DataError(
        f"{key}: column '{name}' has {count} of {survey.rows} rows with missing values in {path}{others}; "
        "fill or drop those rows first"
    )


def _pick_target(target: str | None, columns: list[str], path: Path) -> str:
    if target is None:
        if len(columns) < 2:
            raise DataError(f"data.path: {path} has only the column '{columns[0]}'; need features and a target")
        return columns[-1]
    if target not in columns:
        raise DataError(
            f"data.target: column '{target}' not found in {path}{suggest(target, columns)}; "
            f"columns are: {', '.join(columns)}"
        )
    return target


def _pick_features(features: list[str] | None, target: str, columns: list[str], path: Path) -> list[str]:
    if features is None:
        return [column for column in columns if column != target]
    unknown = [name for name in features if name not in columns]
    if unknown:
        raise DataError(
            f"data.features: column '{unknown[0]}' not found in {path}{suggest(unknown[0], columns)}; "
            f"columns are: {', '.join(columns)}"
        )
    if target in features:
        raise DataError(f"data.features: '{target}' is the target column (data.target); remove it from features")
    duplicates = sorted({name for name in features if features.count(name) > 1})
    if duplicates:
        raise DataError(f"data.features: column '{duplicates[0]}' is listed more than once")
    if not features:
        raise DataError("data.features: the list is empty; name at least one feature column")
    return list(features)


def _pick_categorical(listed: list[str], features: list[str], frame: pd.DataFrame) -> set[str]:
    """Listed columns plus every non-numeric feature, which could not become a float anyway."""
    stray = [name for name in listed if name not in features]
    if stray:
        raise DataError(
            f"data.categorical: column '{stray[0]}' is not a feature column; features are: {', '.join(features)}"
        )
    chosen = set(listed)
    for name in features:
        kind = _column_kind(frame[name])
        if kind == "categorical":
            chosen.add(name)
        elif kind is None and name not in chosen:
            raise DataError(
                f"data.features: column '{name}' has dtype {frame[name].dtype}, which is neither numeric nor "
                "categorical; list it in data.categorical or leave it out of data.features"
            )
    return chosen


def _column_kind(column: pd.Series) -> str | None:
    import pandas as pd

    types = pd.api.types
    dtype = column.dtype
    if types.is_bool_dtype(dtype) or types.is_object_dtype(dtype) or types.is_string_dtype(dtype):
        return "categorical"
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    return "numeric" if types.is_numeric_dtype(dtype) else None


def _column_values(column: pd.Series) -> np.ndarray:
    """The target column as a plain numpy array (nullable and string pandas dtypes become numpy ones)."""
    import pandas as pd

    types = pd.api.types
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return column.astype(object).to_numpy(dtype=object)
    if types.is_bool_dtype(dtype):
        return column.to_numpy(dtype=bool)
    if types.is_integer_dtype(dtype):
        return column.to_numpy(dtype=np.int64)
    if types.is_float_dtype(dtype):
        return column.to_numpy(dtype=np.float64)
    return column.to_numpy(dtype=object)
