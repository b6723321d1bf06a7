"""Readers for what ``data.source`` names, returning raw arrays before the task is inferred or data is split.

Every reader is registered by name in ``torchport.registry.DATA_SOURCES`` (lazily, by import path, so that a
config is validated without importing this module) and tests enumerate them all: a new source is tested the
moment it exists. Readers report problems in the user's own terms (the config key and the file at fault);
pandas, Pillow and scikit-learn are imported inside the readers so importing torchport stays fast.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from torchport.config import DataConfig
from torchport.errors import DataError, first_line, suggest
from torchport.registry import DATA_SOURCES
from torchport.tabular import ColumnEncoding, encode_rows, feature_names, learn_encodings, numeric_encodings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("torchport.data")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class RawData:
    """What a reader found: features as the model will see them, targets still in the user's own labels."""

    x: np.ndarray  # (N, *input_shape) float32, or int64 for integer arrays (token ids)
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
    x = bunch.images.astype(np.float32)[:, None]  # (N, 1, 8, 8), raw pixel values 0..16
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


# --- tables: csv and parquet --------------------------------------------------------------------------------


def read_csv(cfg: DataConfig) -> RawData:
    import pandas as pd

    path = _existing(cfg.path, "data.path", cfg.source)
    frame = _read_table(lambda: pd.read_csv(path), path, "CSV")
    return _from_frame(frame, cfg, path, f"csv:{path}")


def read_parquet(cfg: DataConfig) -> RawData:
    import pandas as pd

    path = _existing(cfg.path, "data.path", cfg.source)
    frame = _read_table(lambda: pd.read_parquet(path), path, "Parquet")
    return _from_frame(frame, cfg, path, f"parquet:{path}")


def _read_table(read: Callable[[], pd.DataFrame], path: Path, kind: str) -> pd.DataFrame:
    try:
        frame = read()
    except (OSError, ValueError) as exc:  # parser, encoding and Arrow errors all derive from these
        raise DataError(f"data.path: cannot read {path} as {kind}: {first_line(exc, type(exc).__name__)}") from None
    frame.columns = [str(column) for column in frame.columns]
    if len(frame) == 0:
        raise DataError(f"data.path: {path} has no rows")
    return frame


def _from_frame(frame: pd.DataFrame, cfg: DataConfig, path: Path, source: str) -> RawData:
    names = list(frame.columns)
    target = _pick_target(cfg.target, names, path)
    features = _pick_features(cfg.features, target, names, path)
    categorical = _pick_categorical(cfg.categorical, features, frame)
    _check_missing(frame, target, features, path)
    try:
        columns = learn_encodings(frame, features, categorical)
        x = encode_rows(frame, columns)  # the very function Bundle.predict and the server encode raw rows with
    except DataError as exc:
        raise DataError(f"data.features: {exc} (in {path})") from None
    y = _column_values(frame[target])
    return RawData(x, y, feature_names(columns), source, "data.features", "data.target", columns)


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


def _check_missing(frame: pd.DataFrame, target: str, features: list[str], path: Path) -> None:
    """Dropping rows silently would change what the model learns from; the user decides instead."""
    missing = frame[[*features, target]].isna().sum()
    bad = [(name, int(count)) for name, count in missing.items() if count > 0]
    if not bad:
        return
    name, count = bad[0]
    key = "data.target" if name == target else "data.features"
    others = f" (and {len(bad) - 1} more column(s) with missing values)" if len(bad) > 1 else ""
    raise DataError(
        f"{key}: column '{name}' has {count} of {len(frame)} rows with missing values in {path}{others}; "
        "fill or drop those rows first"
    )


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


# --- arrays: npy and npz ------------------------------------------------------------------------------------


def read_npy(cfg: DataConfig) -> RawData:
    x_path = _existing(cfg.path, "data.path", cfg.source)
    y_path = _existing(cfg.targets, "data.targets", cfg.source)
    x = _load_npy(x_path, "data.path")
    y = _load_npy(y_path, "data.targets")
    return RawData(_as_features(x, "data.path"), y, [], f"npy:{x_path}", "data.path", "data.targets")


def read_npz(cfg: DataConfig) -> RawData:
    path = _existing(cfg.path, "data.path", cfg.source)
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


# --- image folders ------------------------------------------------------------------------------------------


def read_image_folder(cfg: DataConfig) -> RawData:
    root = _existing(cfg.path, "data.path", cfg.source, folder=True)
    files, labels = _image_files(root)
    if cfg.image_size is not None and min(cfg.image_size) < 1:
        raise DataError(f"data.image_size: must be two positive integers (height, width), got {cfg.image_size}")
    mode = "L" if cfg.color_mode == "grayscale" else "RGB"
    skip = cfg.skip_corrupt
    images, kept, skipped = _read_images(files, mode, cfg.image_size, skip)
    if not images:
        raise DataError(f"data.path: none of the {len(files)} images in {root} could be decoded")
    _check_same_size(images, [files[i] for i in kept])
    x = np.stack(images)  # (N, C, H, W), raw values 0..255
    y = np.asarray([labels[i] for i in kept], dtype=object)
    if skipped:
        log.warning(
            "data.skip_corrupt: skipped %d undecodable image(s) in %s, first %s", len(skipped), root, skipped[0]
        )
    source = f"image_folder:{root}"
    return RawData(x, y, [], source, "data.path", "data.path", skipped=tuple(skipped))


def _read_images(
    files: list[Path], mode: str, size: tuple[int, int] | None, skip: bool
) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Decoded images, the indices of ``files`` they came from, and the files skipped as undecodable."""
    images: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[str] = []
    for index, path in enumerate(files):
        try:
            images.append(_read_image(path, mode, size))
        except DataError:
            if not skip:
                raise
            skipped.append(str(path))
            continue
        kept.append(index)
    return images, kept, skipped


def _image_files(root: Path) -> tuple[list[Path], list[str]]:
    """``root/<class_name>/*.png``; hidden entries and other files (notes, thumbnails) are ignored."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"data.path: {root} holds no class folders; expected {root}/<class_name>/<image>.png")
    files: list[Path] = []
    labels: list[str] = []
    for folder in folders:
        images = sorted(p for p in folder.iterdir() if _is_image(p))
        if not images:
            raise DataError(f"data.path: class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += images
        labels += [folder.name] * len(images)
    return files, labels


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _read_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
        if size is not None:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL takes (W, H)
        pixels = np.asarray(image, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as exc:
        # PIL reports broken files as any of these (SyntaxError: "broken PNG file"; OSError: truncated data).
        raise DataError(
            f"data.path: cannot decode image {path}: {first_line(exc, type(exc).__name__)}; "
            "fix or remove it, or set data.skip_corrupt: true to skip undecodable images"
        ) from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)


def _check_same_size(images: list[np.ndarray], files: list[Path]) -> None:
    first = images[0].shape[1:]
    for image, path in zip(images, files, strict=True):
        if image.shape[1:] != first:
            raise DataError(
                f"data.image_size: {path} is {image.shape[1]}x{image.shape[2]} (HxW) but {files[0]} is "
                f"{first[0]}x{first[1]}; set data.image_size to resize every image"
            )


# --- helpers ------------------------------------------------------------------------------------------------


def _existing(path: Path | None, key: str, source: str, folder: bool = False) -> Path:
    what = "folder" if folder else "file"
    if path is None:
        raise DataError(f"{key}: required for source '{source}' (the {what} to read)")
    found = path.is_dir() if folder else path.is_file()
    if not found:
        raise DataError(f"{key}: {what} not found: {path}")
    return path
