"""Samples read on demand: what a data source hands over when the whole set would not fit in memory.

``Rows`` looks like the read-only part of a numpy array that the rest of torchport uses (``len``, ``shape``,
``dtype`` and indexing by an int, a slice or an index array, which returns a real ``np.ndarray``), so a split, a
loader or an evaluation never asks which kind it holds. Indexing reads only the samples asked for: an image
folder decodes those files, a ``.npy`` file reads those rows with ``pread``. Reading rows with ``pread`` instead
of memory-mapping keeps them out of the process's resident set once a batch is done: a memory map of a file
larger than RAM shows its whole file as resident after one epoch, which a machine under pressure then swaps.

A ``Rows`` is small and picklable (paths and index arrays, never an open file), so DataLoader workers receive a
copy and read on their own; the sampler in the main process alone decides the order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from torchport.errors import DataError, first_line

Array = Any  # np.ndarray or Rows: anything indexed like the first axis of an array


class Rows:
    """The base of every on-demand sample array; subclasses implement ``read``."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.read(_in_range(np.asarray([int(key)]), len(self)))[0]
        if isinstance(key, slice):
            return self.read(np.arange(len(self), dtype=np.int64)[key])
        return self.read(_in_range(np.asarray(key, dtype=np.int64).reshape(-1), len(self)))

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The samples at ``indices`` (int64, any order, repeats allowed), stacked in that order."""
        raise NotImplementedError

    def subset(self, indices: np.ndarray) -> Rows:
        return RowSubset(self, np.asarray(indices, dtype=np.int64))


def _in_range(indices: np.ndarray, length: int) -> np.ndarray:
    """Negative indices count from the end, as numpy's do; anything outside is an IndexError, as numpy's is."""
    indices = np.where(indices < 0, indices + length, indices)
    if len(indices) and (indices.min() < 0 or indices.max() >= length):
        raise IndexError(f"index out of range for {length} samples")
    return indices


class RowSubset(Rows):
    """Some of another ``Rows``' samples, in the given order: a split of a lazily read source."""

    def __init__(self, base: Rows, indices: np.ndarray) -> None:
        self.base, self.indices = base, indices
        self.shape = (len(indices), *base.shape[1:])
        self.dtype = base.dtype

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.base.read(self.indices[indices])

    def subset(self, indices: np.ndarray) -> Rows:
        return RowSubset(self.base, self.indices[np.asarray(indices, dtype=np.int64)])


class NpyRows(Rows):
    """The rows of a C-ordered ``.npy`` file, read with ``pread`` and converted to ``dtype`` as they are read."""

    def __init__(self, path: Path, key: str, dtype: np.dtype[Any] | type | None = None) -> None:
        self.path, self.key = path, key
        self.stored, shape, self.offset = npy_layout(path, key)
        self.shape = shape
        self.dtype = np.dtype(dtype or self.stored)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.stored.itemsize
        self._fd: int | None = None
        self._pid = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": 0}  # a worker opens its own descriptor

    def read(self, indices: np.ndarray) -> np.ndarray:
        fd = self._descriptor()
        unique, inverse = np.unique(indices, return_inverse=True)
        buffer = np.empty((len(unique), self.row_bytes), dtype=np.uint8)
        filled = 0
        for first, last in _contiguous_runs(unique):
            count = last - first + 1
            chunk = os.pread(fd, count * self.row_bytes, self.offset + first * self.row_bytes)
            if len(chunk) != count * self.row_bytes:
                raise DataError(f"{self.key}: {self.path} is shorter than its header says (truncated?)")
            buffer[filled : filled + count] = np.frombuffer(chunk, dtype=np.uint8).reshape(count, -1)
            filled += count
        rows = buffer.view(self.stored).reshape(len(unique), *self.shape[1:])[inverse.reshape(-1)]
        return rows.astype(self.dtype, copy=False)

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def _contiguous_runs(unique: np.ndarray) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive values in sorted, distinct ``unique``: one ``pread`` per run."""
    if len(unique) == 0:
        return
    breaks = np.flatnonzero(np.diff(unique) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(unique) - 1]])
    for start, end in zip(starts, ends, strict=True):
        yield int(unique[start]), int(unique[end])


def npy_layout(path: Path, key: str) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """The stored dtype, shape and data offset of a ``.npy`` file, from its header alone."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            header = read_header(handle)  # (shape, fortran_order, dtype)
            offset = handle.tell()
    except (OSError, ValueError) as exc:
        raise DataError(f"{key}: cannot read {path} as .npy: {first_line(exc, type(exc).__name__)}") from None
    shape, fortran_order, dtype = header
    if fortran_order and len(shape) > 1:
        raise DataError(f"{key}: {path} is stored in Fortran order; save it C-ordered to read it row by row")
    if dtype.hasobject:
        raise DataError(f"{key}: {path} holds Python objects (a pickle), which torchport never loads")
    return dtype, tuple(int(size) for size in shape), offset


def take(x: Array, indices: np.ndarray) -> Array:
    """``x[indices]``: a copy for an in-memory array (with plain strides), a view that reads on demand for ``Rows``."""
    return x.subset(indices) if isinstance(x, Rows) else plain_strides(x[indices])


def plain_strides(x: np.ndarray) -> np.ndarray:
    """``x`` C-ordered, with the strides of a fresh C-ordered array (no copy when it is C-ordered already).

    A size-1 axis's stride says nothing about the layout, and numpy's copy of an ``x[:, None]`` gives that axis
    the smallest stride. torch reads a batch of 1-channel images with such strides as channels_last, and picks
    channels_last convolutions for it: the digits CNN's forward and backward passes ran 10-15 % slower."""
    return np.ascontiguousarray(x).reshape(-1).reshape(x.shape)


def chunks(x: Array, size: int) -> Iterator[np.ndarray]:
    """``x`` in order, ``size`` samples at a time: evaluation over a split that may not fit in memory."""
    for start in range(0, len(x), size):
        yield np.asarray(x[start : start + size])


def write_npy(path: Path, parts: Iterator[np.ndarray], shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    """A ``.npy`` file of ``shape`` written part by part (each (n, *shape[1:])), so it never sits whole in memory."""
    with path.open("wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)
        written = 0
        for part in parts:
            handle.write(np.ascontiguousarray(part, dtype=dtype).tobytes())
            written += len(part)
        handle.flush()
        os.fsync(handle.fileno())
    if written != shape[0]:
        raise DataError(f"data.path: wrote {written} rows to {path}, expected {shape[0]}")
