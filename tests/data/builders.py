"""Small datasets written to a test's tmp_path, one writer per file source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from torchport.config import DataConfig

ROWS = 30


def table() -> pd.DataFrame:
    """A feature of each kind: float, string (categorical), int; then a float and a string target."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "size": rng.normal(5.0, 2.0, ROWS),
            "color": [("red", "green", "blue")[i % 3] for i in range(ROWS)],
            "count": np.arange(ROWS) % 7,
            "price": rng.normal(100.0, 10.0, ROWS),
            "label": [("cat", "dog")[i % 2] for i in range(ROWS)],
        }
    )


def write_csv(folder: Path) -> DataConfig:
    path = folder / "table.csv"
    table().to_csv(path, index=False)
    return DataConfig(source="csv", path=path, features=["size", "color", "count"], target="label")


def write_parquet(folder: Path) -> DataConfig:
    path = folder / "table.parquet"
    table().drop(columns=["label"]).to_parquet(path)  # the last column, price, is the target
    return DataConfig(source="parquet", path=path)


def write_npy(folder: Path) -> DataConfig:
    rng = np.random.default_rng(1)
    np.save(folder / "x.npy", rng.normal(size=(40, 3)))
    np.save(folder / "y.npy", np.arange(40) % 2)
    return DataConfig(source="npy", path=folder / "x.npy", targets=folder / "y.npy")


def write_npz(folder: Path) -> DataConfig:
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 100, size=(40, 5))
    np.savez(folder / "data.npz", x=tokens, y=rng.normal(size=(40, 2)))
    return DataConfig(source="npz", path=folder / "data.npz")


def write_images(
    folder: Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    per_class: int = 4,
    size: tuple[int, int] = (6, 5),
) -> DataConfig:
    """``size`` is (H, W); each image is a solid colour so decoded values are easy to check."""
    root = folder / "images"
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            colour = (40 * c, 10 * i, 200)
            Image.new("RGB", (size[1], size[0]), colour).save(root / name / f"{i}.png")
    return DataConfig(source="image_folder", path=root)


def updated(cfg: DataConfig, **changes: Any) -> DataConfig:
    """A validated copy (``model_copy`` would leave nested dicts such as ``split`` unvalidated)."""
    return DataConfig.model_validate({**cfg.model_dump(), **changes})


FILE_WRITERS: dict[str, Callable[[Path], DataConfig]] = {
    "csv": write_csv,
    "parquet": write_parquet,
    "npy": write_npy,
    "npz": write_npz,
    "image_folder": write_images,
}
