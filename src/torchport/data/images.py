"""Image folders (``root/<class_name>/<image>.png``): decoded up front when they fit in memory, else per sample.

``data.in_memory: auto`` decodes every image once at load when the decoded set is under ``MEMORY_LIMIT_BYTES``
(the fastest path for small sets); larger folders, or ``in_memory: false``, are read as ``ImageFiles``: only each
file's header is read at load (its size, and whether it opens at all), and a DataLoader worker decodes the
files of each batch. A file whose header is broken is named (or skipped and counted with
``data.skip_corrupt``) before training starts; one whose pixel data turns out broken mid-training stops it with
a line naming the file, since skipping a sample then would change the batch the sampler chose.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from torchport.config import DataConfig
from torchport.data.rows import Array, Rows
from torchport.data.sources import MEMORY_LIMIT_BYTES, RawData, existing
from torchport.errors import DataError, first_line

Result = TypeVar("Result")

log = logging.getLogger("torchport.data")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read_image_folder(cfg: DataConfig) -> RawData:
    root = existing(cfg.path, "data.path", cfg.source, folder=True)
    if cfg.image_size is not None and min(cfg.image_size) < 1:
        raise DataError(f"data.image_size: must be two positive integers (height, width), got {cfg.image_size}")
    files, labels = _image_files(root)
    mode = "L" if cfg.color_mode == "grayscale" else "RGB"
    x: Array
    if _decode_up_front(cfg, files, mode):
        x, kept, skipped = _decoded(files, mode, cfg.image_size, cfg.skip_corrupt)
    else:
        x, kept, skipped = _lazy(files, mode, cfg.image_size, cfg.skip_corrupt)
    if not kept:
        raise DataError(f"data.path: none of the {len(files)} images in {root} could be decoded")
    y = np.asarray([labels[i] for i in kept], dtype=object)
    if skipped:
        log.warning(
            "data.skip_corrupt: skipped %d undecodable image(s) in %s, first %s", len(skipped), root, skipped[0]
        )
    return RawData(x, y, [], f"image_folder:{root}", "data.path", "data.path", skipped=tuple(skipped))


def _decode_up_front(cfg: DataConfig, files: list[Path], mode: str) -> bool:
    if cfg.in_memory != "auto":
        return bool(cfg.in_memory)
    try:
        height, width = cfg.image_size or _opened_size(files[0])
    except DataError:
        return True  # decoding reports (or skips) the broken file like any other
    channels = 1 if mode == "L" else 3
    return len(files) * channels * height * width * 4 <= MEMORY_LIMIT_BYTES


# --- decoded up front ---------------------------------------------------------------------------------------


def _decoded(
    files: list[Path], mode: str, size: tuple[int, int] | None, skip: bool
) -> tuple[np.ndarray, list[int], list[str]]:
    """Every image decoded, (N, C, H, W) raw values 0..255; the indices of ``files`` kept; the files skipped."""
    images, kept, skipped = _each_readable(files, lambda path: decode_image(path, mode, size), skip)
    if not images:
        return np.empty((0,)), kept, skipped
    _check_same_size([image.shape[1:] for image in images], [files[i] for i in kept])
    return np.stack(images), kept, skipped


# --- decoded per batch --------------------------------------------------------------------------------------


class ImageFiles(Rows):
    """Image files decoded when their samples are read: (N, C, H, W) float32, raw values 0..255."""

    def __init__(self, files: list[str], mode: str, size: tuple[int, int] | None, shape: tuple[int, ...]) -> None:
        self.files, self.mode, self.size = files, mode, size
        self.shape = shape
        self.dtype = np.dtype(np.float32)

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.float32)
        for position, index in enumerate(indices):
            path = Path(self.files[int(index)])
            image = decode_image(path, self.mode, self.size)
            if image.shape != self.shape[1:]:
                raise DataError(
                    f"data.image_size: {path} is {image.shape[1]}x{image.shape[2]} (HxW) but {self.files[0]} is "
                    f"{self.shape[2]}x{self.shape[3]}; set data.image_size to resize every image"
                )
            out[position] = image
        return out


def _lazy(
    files: list[Path], mode: str, size: tuple[int, int] | None, skip: bool
) -> tuple[ImageFiles, list[int], list[str]]:
    """``ImageFiles`` over the files whose headers open; sizes are checked from the headers too."""
    sizes, kept, skipped = _each_readable(files, _opened_size, skip)
    if kept and size is None:
        _check_same_size(sizes, [files[i] for i in kept])
    height, width = size or (sizes[0] if sizes else (0, 0))
    shape = (len(kept), 1 if mode == "L" else 3, height, width)
    return ImageFiles([str(files[i]) for i in kept], mode, size, shape), kept, skipped


def _each_readable(
    files: list[Path], read: Callable[[Path], Result], skip: bool
) -> tuple[list[Result], list[int], list[str]]:
    """``read`` of each file, the indices of those read, and the files skipped: a file ``read`` refuses
    (DataError) stops the load, or under ``data.skip_corrupt`` is skipped and counted."""
    results: list[Result] = []
    kept: list[int] = []
    skipped: list[str] = []
    for index, path in enumerate(files):
        try:
            results.append(read(path))
        except DataError:
            if not skip:
                raise
            skipped.append(str(path))
            continue
        kept.append(index)
    return results, kept, skipped


def _opened_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            return opened.height, opened.width
    except _decode_errors() as exc:
        raise _undecodable(path, exc) from None


# --- one image ----------------------------------------------------------------------------------------------


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for a broken file (SyntaxError: "broken PNG file"; OSError: truncated data), and its
    DecompressionBombError, which is no OSError: a file too large to decode safely is named like a broken one."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


def decode_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as (C, H, W) float32, resized to ``size`` (H, W) when given."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
        if size is not None:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL takes (W, H)
        pixels = np.asarray(image, dtype=np.float32)
    except _decode_errors() as exc:
        raise _undecodable(path, exc) from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)


def _undecodable(path: Path, exc: BaseException) -> DataError:
    return DataError(
        f"data.path: cannot decode image {path}: {first_line(exc, type(exc).__name__)}; "
        "fix or remove it, or set data.skip_corrupt: true to skip undecodable images"
    )


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


def _check_same_size(sizes: list[Any], files: list[Path]) -> None:
    """``sizes``: each image's (H, W), the first is the one the others must match."""
    first = tuple(sizes[0])
    for size, path in zip(sizes, files, strict=True):
        if tuple(size) != first:
            raise DataError(
                f"data.image_size: {path} is {size[0]}x{size[1]} (HxW) but {files[0]} is "
                f"{first[0]}x{first[1]}; set data.image_size to resize every image"
            )
