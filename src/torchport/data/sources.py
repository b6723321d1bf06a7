"""Readers for what ``data.source`` names, returning raw arrays before the task is inferred or data is split.

Every reader is registered by name in ``torchport.registry.DATA_SOURCES`` (lazily, by import path, so that a
config is validated without importing this module) and tests enumerate them all: a new source is tested the
moment it exists. Readers report problems in the user's own terms (the config key and the file at fault);
pandas, Pillow and scikit-learn are imported inside the readers so importing torchport stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchport.config import DataConfig
from torchport.data.rows import Array, NpyRows, chunks, npy_layout
from torchport.errors import DataError, first_line, suggest
from torchport.registry import DATA_SOURCES
from torchport.tabular import ColumnEncoding, feature_names, numeric_encodings

MEMORY_LIMIT_BYTES = 512 * 2**20  # under data.in_memory: auto, samples larger than this in all are read per batch


@dataclass
class RawData:
    """What a reader found: features as the model will see them, targets still in the user's own labels."""

    x: Array  # (N, *input_shape) float32, or int64 for integer arrays (token ids); Rows when read on demand
    y: np.ndarray  # (N,) or (N, T), any dtype: strings, bools, ints or floats as the user stored them
    feature_names: list[str]
    source: str  # "digits", "csv:/abs/path.csv"
    x_key: str  # the config key to blame for bad features
    y_key: str  # the config key to blame for bad targets
    columns: tuple[ColumnEncoding, ...] = ()  # tables: how each raw column became features; () for the others
    skipped: tuple[str, ...] = ()  # image folders with data.skip_corrupt: the files that could not be decoded


def read_source(cfg: DataConfig) -> RawData:
    reader: Callable[[DataConfig], RawData] = DATA_SOURCES.get(cfg.source, where="data.source")
    return reader(cfg)


# --- bundled scikit-learn sets ------------------------------------------------------------------------------


def read_digits(cfg: DataConfig) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # (N, 1, 8, 8), raw pixel values 0..16; a reshape, not [:, None], whose zero stride numpy's copies turn into the
    # channel axis's being the smallest: see rows.plain_strides.
    x = bunch.images.astype(np.float32).reshape(-1, 1, 8, 8)
    return RawData(x, bunch.target, [], "digits", "data.source", "data.source")


def read_iris(cfg: DataConfig) -> RawData:
    from sklearn.datasets import load_iris

    return _sklearn_tabular(load_iris(), "iris")


def read_wine(cfg: DataConfig) -> RawData:
    from sklearn.datasets import load_wine

    return _sklearn_tabular(load_wine(), "wine")


def read_breast_cancer(cfg: DataConfig) -> RawData:
    from sklearn.datasets import load_breast_cancer

    return _sklearn_tabular(load_breast_cancer(), "breast_cancer")


def _sklearn_tabular(bunch: Any, name: str) -> RawData:
    # Named labels ("setosa") make a readable manifest; they sort into the same order as sklearn's ids,
    # except breast_cancer, where "benign" (sklearn's 1) becomes 0.
    labels = np.asarray(bunch.target_names)[bunch.target]
    columns = numeric_encodings([str(feature) for feature in bunch.feature_names])
    x = bunch.data.astype(np.float32)
    return RawData(x, labels, feature_names(columns), name, "data.source", "data.source", columns)


# --- arrays: npy and npz ------------------------------------------------------------------------------------


def read_npy(cfg: DataConfig) -> RawData:
    x_path = existing(cfg.path, "data.path", cfg.source)
    y_path = existing(cfg.targets, "data.targets", cfg.source)
    x = _npy_on_demand(x_path, cfg) or _as_features(_load_npy(x_path, "data.path"), "data.path")
    y = _load_npy(y_path, "data.targets")
    return RawData(x, y, [], f"npy:{x_path}", "data.path", "data.targets")


def _npy_on_demand(path: Path, cfg: DataConfig) -> NpyRows | None:
    """The features as rows read per batch when they should not be loaded whole (``data.in_memory``); None to
    load them. Only C-ordered files of two or more dimensions qualify: a row must be one contiguous run of bytes."""
    stored, shape, _ = npy_layout(path, "data.path")
    if cfg.in_memory is True or len(shape) < 2 or stored.kind not in "biuf":
        return None
    wanted = np.dtype(np.int64 if stored.kind in "iu" else np.float32)
    if cfg.in_memory == "auto" and int(np.prod(shape, dtype=np.int64)) * wanted.itemsize <= MEMORY_LIMIT_BYTES:
        return None
    rows = NpyRows(path, "data.path", wanted)
    for start, part in enumerate(chunks(rows, 65536)):
        bad = ~np.isfinite(part.reshape(len(part), -1)).all(axis=1)
        if bad.any():
            raise DataError(
                f"data.path: sample {start * 65536 + int(np.argmax(bad))} of {path} holds NaN or infinite values"
            )
    return rows


def read_npz(cfg: DataConfig) -> RawData:
    path = existing(cfg.path, "data.path", cfg.source)
    archive = _load(path, "data.path")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"data.path: {path} is a single .npy array, not an .npz archive; use source: npy")
    with archive:
        x = _npz_member(archive, cfg.x_key, "data.x_key", path)
        y = _npz_member(archive, cfg.y_key, "data.y_key", path)
    return RawData(_as_features(x, "data.x_key"), y, [], f"npz:{path}", "data.x_key", "data.y_key")


def _load(path: Path, key: str) -> Any:
    try:
        return np.load(path, allow_pickle=False)  # pickles can run code: never load them
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{key}: cannot load {path}: {first_line(exc, type(exc).__name__)}") from None


def _load_npy(path: Path, key: str) -> np.ndarray:
    loaded = _load(path, key)
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise DataError(f"{key}: {path} is an .npz archive, not a single .npy array; use source: npz")
    return loaded


def _npz_member(archive: np.lib.npyio.NpzFile, name: str, key: str, path: Path) -> np.ndarray:
    if name not in archive.files:
        raise DataError(
            f"{key}: array '{name}' not found in {path}{suggest(name, archive.files)}; "
            f"arrays are: {', '.join(archive.files)}"
        )
    try:
        return np.asarray(archive[name])
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{key}: cannot load array '{name}' from {path}: {first_line(exc, type(exc).__name__)}"
        ) from None


def _as_features(x: np.ndarray, key: str) -> np.ndarray:
    """Integers stay int64 because they are usually token ids for an embedding; everything else is float32."""
    if x.ndim == 0:
        raise DataError(f"{key}: features must have a sample dimension, got a scalar")
    if x.ndim == 1:
        x = x[:, None]  # one feature per sample
    if x.dtype.kind in "iu":
        return x.astype(np.int64)
    if x.dtype.kind in "bf":
        return x.astype(np.float32)
    raise DataError(f"{key}: features must be numbers, got dtype {x.dtype}")


# --- helpers ------------------------------------------------------------------------------------------------


def existing(path: Path | None, key: str, source: str, folder: bool = False) -> Path:
    what = "folder" if folder else "file"
    if path is None:
        raise DataError(f"{key}: required for source '{source}' (the {what} to read)")
    found = path.is_dir() if folder else path.is_file()
    if not found:
        raise DataError(f"{key}: {what} not found: {path}")
    return path
