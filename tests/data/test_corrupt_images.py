"""Undecodable files in an image folder: one line naming the file, or skipped and counted with skip_corrupt."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from PIL import Image

from torchport.config import DataConfig
from torchport.data import load_data
from torchport.errors import DataError

from .builders import write_images


def _truncated_png() -> bytes:
    """A PNG whose header is valid but whose pixel data stops half way: it opens, then fails to decode."""
    buffer = io.BytesIO()
    Image.new("RGB", (5, 6), (1, 2, 3)).save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


@pytest.mark.parametrize("content", [b"\x89PNG not really", b"", _truncated_png()], ids=["garbage", "empty", "cut"])
def test_a_corrupt_image_is_one_line_naming_the_file(tmp_path: Path, content: bytes) -> None:
    cfg = write_images(tmp_path)
    assert cfg.path is not None
    (cfg.path / "dog" / "broken.png").write_bytes(content)
    with pytest.raises(DataError, match=r"^data\.path: cannot decode image .*dog/broken\.png.*skip_corrupt") as info:
        load_data(cfg, seed=0)
    assert "\n" not in str(info.value)


def test_skip_corrupt_skips_and_counts_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_images(tmp_path, per_class=5).path
    assert root is not None
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "dog" / "cut.png").write_bytes(_truncated_png())
    with caplog.at_level(logging.WARNING, logger="torchport.data"):
        data = load_data(DataConfig(source="image_folder", path=root, skip_corrupt=True), seed=0)
    assert len(data.train) + len(data.val) == 10  # the ten good images, labels still aligned
    assert sorted(Path(p).name for p in data.skipped) == ["broken.png", "cut.png"]
    assert "skipped 2 undecodable image(s)" in caplog.text


def test_skip_corrupt_keeps_labels_with_their_images(tmp_path: Path) -> None:
    root = write_images(tmp_path, per_class=4).path
    assert root is not None
    (root / "cat" / "0_broken.png").write_bytes(b"junk")  # sorts first: shifts every later index by one
    data = load_data(DataConfig(source="image_folder", path=root, skip_corrupt=True, split={"val": 0.0}), seed=0)
    red = data.train.x[:, 0, 0, 0]  # write_images: cat images have red 0, dog images red 40
    assert sorted(zip(red.tolist(), data.train.y.tolist(), strict=True)) == [(0.0, 0)] * 4 + [(40.0, 1)] * 4
    assert len(data.skipped) == 1


def test_a_folder_of_only_corrupt_images_is_named(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        (root / name / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"^data\.path: none of the 2 images in .*images could be decoded"):
        load_data(DataConfig(source="image_folder", path=root, skip_corrupt=True), seed=0)
