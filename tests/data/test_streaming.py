"""Data read on demand: tables read in chunks, large tables from an on-disk cache, image files decoded per batch,
.npy rows read with pread. Each lazy path must give exactly the samples the in-memory path gives."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from torchport.config import DataConfig
from torchport.data import load_data
from torchport.data.images import ImageFiles
from torchport.data.loaders import batch_loader
from torchport.data.rows import NpyRows, Rows
from torchport.data.sources import read_source
from torchport.data.tables import CHUNK_BYTES, TableFile
from torchport.errors import DataError
from torchport.train.sampling import EpochBatchSampler

from .builders import updated, write_images


def _table(rows: int, seed: int = 0) -> pd.DataFrame:
    """Numbers, a category whose rarest value first appears late (so one chunk cannot know every category),
    and a label."""
    rng = np.random.default_rng(seed)
    colors = np.array(["red", "green", "blue"], dtype=object)[rng.integers(0, 3, rows)]
    colors[rows - 3] = "violet"
    return pd.DataFrame(
        {
            "size": rng.normal(5.0, 2.0, rows),
            "count": rng.integers(0, 9, rows),
            "color": colors,
            "label": np.where(rng.random(rows) > 0.5, "cat", "dog"),
        }
    )


@pytest.fixture(params=["csv", "parquet"])
def table_config(request: pytest.FixtureRequest, tmp_path: Path) -> DataConfig:
    frame = _table(250)
    path = tmp_path / f"table.{request.param}"
    if request.param == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, row_group_size=40)
    return DataConfig(source=request.param, path=path, cache_dir=tmp_path / "cache")


def test_a_table_larger_than_the_chunk_size_streams_to_the_same_features(table_config: DataConfig) -> None:
    whole = read_source(updated(table_config, chunk_rows=10_000, in_memory=True))
    chunked = read_source(updated(table_config, chunk_rows=17, in_memory=True))
    assert isinstance(chunked.x, np.ndarray)
    np.testing.assert_array_equal(whole.x, chunked.x)
    np.testing.assert_array_equal(whole.y, chunked.y)
    assert "color=violet" in chunked.feature_names, "a category first seen in the last chunk is known"


def test_a_table_kept_out_of_memory_is_read_from_the_cache_row_by_row(table_config: DataConfig) -> None:
    memory = read_source(updated(table_config, in_memory=True))
    disk = read_source(updated(table_config, chunk_rows=23, in_memory=False))
    assert isinstance(disk.x, NpyRows) and disk.x.shape == memory.x.shape
    order = np.random.default_rng(1).permutation(len(memory.x))
    np.testing.assert_array_equal(disk.x[order], memory.x[order])
    cache = disk.x.path
    assert cache.parent == table_config.cache_dir / "tables"  # type: ignore[operator]
    written = cache.stat().st_mtime_ns
    again = read_source(updated(table_config, chunk_rows=23, in_memory=False))
    assert isinstance(again.x, NpyRows) and again.x.path == cache
    assert cache.stat().st_mtime_ns == written, "a second run reuses the encoded cache"


def test_splits_of_a_table_on_disk_equal_the_in_memory_ones(table_config: DataConfig) -> None:
    memory = load_data(updated(table_config, in_memory=True), seed=4)
    disk = load_data(updated(table_config, in_memory=False, stats_samples=1000), seed=4)
    for name in ("train", "val", "test"):
        lazy, eager = getattr(disk, name), getattr(memory, name)
        assert isinstance(lazy.x, Rows)
        np.testing.assert_array_equal(lazy.x[np.arange(len(lazy))], eager.x)
        np.testing.assert_array_equal(lazy.y, eager.y)
    np.testing.assert_allclose(disk.input_mean, memory.input_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(disk.input_std, memory.input_std, rtol=1e-4)
    assert disk.stats_samples == memory.stats_samples == len(memory.train)


def test_statistics_of_data_read_on_demand_come_from_a_bounded_sample(table_config: DataConfig) -> None:
    data = load_data(updated(table_config, in_memory=False, stats_samples=50), seed=0)
    assert data.stats_samples == 50
    assert np.all(data.input_std > 0)


def test_reading_a_parquet_file_holds_one_row_group_not_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "wide.parquet"
    columns = [f"c{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.standard_normal((100_000, 10)).astype("float32"), columns=columns).to_parquet(
        path, row_group_size=5_000
    )
    row_group_bytes = 5_000 * 10 * 4
    held = [pa.total_allocated_bytes() for _ in TableFile(path, "Parquet", chunk_rows=1_000).frames(columns)]
    assert len(held) == 100
    assert max(held) < 5 * row_group_bytes, f"Arrow held {max(held)} bytes for row groups of {row_group_bytes}"


def test_a_large_row_group_is_streamed_column_by_column_not_read_whole(tmp_path: Path) -> None:
    """One row group of 20 MB read 1,000 rows at a time: reading each column chunk whole held 3.5x the row group."""
    path = tmp_path / "one_group.parquet"
    columns = [f"c{i}" for i in range(100)]
    values = np.random.default_rng(0).standard_normal((50_000, 100)).astype("float32")
    pd.DataFrame(values, columns=columns).to_parquet(path, row_group_size=50_000)
    row_group_bytes = values.nbytes
    held = [pa.total_allocated_bytes() for _ in TableFile(path, "Parquet", chunk_rows=1_000).frames(columns)]
    assert len(held) == 50
    assert max(held) < 3 * row_group_bytes, f"Arrow held {max(held)} bytes for a row group of {row_group_bytes}"


@pytest.mark.parametrize("kind", ["CSV", "Parquet"])
def test_chunks_of_a_wide_table_are_sized_in_bytes_by_default(tmp_path: Path, kind: str) -> None:
    columns = [f"c{i}" for i in range(1_000)]
    frame = pd.DataFrame(np.zeros((10_000, 1_000), dtype="float32"), columns=columns)
    path = tmp_path / f"wide.{kind.lower()}"
    frame.to_csv(path, index=False) if kind == "CSV" else frame.to_parquet(path)
    sizes = [len(chunk) for chunk in TableFile(path, kind, chunk_rows=None).frames(columns)]
    assert sum(sizes) == 10_000
    assert max(sizes) * 1_000 * 4 <= CHUNK_BYTES < (max(sizes) + 1) * 1_000 * 4  # 4,194 rows, not 65,536


def test_a_missing_parquet_column_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _table(20).to_parquet(path)
    with pytest.raises(DataError, match=r"^data\.features: column 'weight' not found in .*t\.parquet"):
        read_source(DataConfig(source="parquet", path=path, features=["size", "weight"], target="label"))


def test_a_column_that_turns_to_text_in_a_later_chunk_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    frame = _table(60)
    frame["size"] = frame["size"].astype(object)
    frame.loc[50, "size"] = "big"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"^data\.categorical: column 'size' holds numbers in the first chunk.*row 40"):
        read_source(DataConfig(source="csv", path=path, chunk_rows=20))


def test_missing_values_are_counted_over_every_chunk(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    frame = _table(60)
    frame.loc[[3, 45, 59], "size"] = np.nan
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"^data\.features: column 'size' has 3 of 60 rows with missing values"):
        read_source(DataConfig(source="csv", path=path, chunk_rows=20))


def test_a_parquet_saved_with_its_index_does_not_train_on_the_index(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _table(30).set_index(pd.Index(np.arange(100, 130), name="row_id")).to_parquet(path)
    raw = read_source(DataConfig(source="parquet", path=path, chunk_rows=7))
    assert "row_id" not in raw.feature_names and raw.y_key == "data.target"
    assert set(raw.y) == {"cat", "dog"}


# --- .npy rows ----------------------------------------------------------------------------------------------


def test_npy_rows_read_any_indices_like_numpy(tmp_path: Path) -> None:
    array = np.random.default_rng(0).normal(size=(50, 3, 4)).astype(np.float64)
    np.save(tmp_path / "x.npy", array)
    rows = NpyRows(tmp_path / "x.npy", "data.path", np.float32)
    wanted = np.array([7, 3, 3, 49, 0, 8, 9, 10, -1])
    np.testing.assert_array_equal(rows[wanted], array[wanted].astype(np.float32))
    np.testing.assert_array_equal(rows[5:40:7], array[5:40:7].astype(np.float32))
    np.testing.assert_array_equal(rows[-2], array[-2].astype(np.float32))
    with pytest.raises(IndexError):
        rows[np.array([50])]
    copied = pickle.loads(pickle.dumps(rows))  # what a DataLoader worker receives
    np.testing.assert_array_equal(copied[wanted], rows[wanted])


def test_npy_source_out_of_memory_gives_the_same_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    np.save(tmp_path / "x.npy", rng.normal(size=(60, 2, 5)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(60) % 3)
    cfg = DataConfig(source="npy", path=tmp_path / "x.npy", targets=tmp_path / "y.npy")
    eager, lazy = load_data(updated(cfg, in_memory=True), seed=1), load_data(updated(cfg, in_memory=False), seed=1)
    assert isinstance(lazy.train.x, NpyRows.__mro__[1])
    np.testing.assert_array_equal(lazy.val.x[np.arange(len(lazy.val))], eager.val.x)


def test_npy_with_a_nan_read_on_demand_is_named(tmp_path: Path) -> None:
    x = np.zeros((20, 3), np.float32)
    x[13, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(20) % 2)
    cfg = DataConfig(source="npy", path=tmp_path / "x.npy", targets=tmp_path / "y.npy", in_memory=False)
    with pytest.raises(DataError, match=r"^data\.path: sample 13 of .*x\.npy holds NaN"):
        load_data(cfg, seed=0)


# --- image files --------------------------------------------------------------------------------------------


def test_image_files_decoded_per_batch_equal_those_decoded_up_front(tmp_path: Path) -> None:
    cfg = write_images(tmp_path, per_class=6)
    eager, lazy = load_data(updated(cfg, in_memory=True), seed=2), load_data(updated(cfg, in_memory=False), seed=2)
    assert isinstance(lazy.train.x, Rows) and isinstance(lazy.train.x.base, ImageFiles)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(lazy.train.x[np.arange(len(lazy.train))], eager.train.x)
    np.testing.assert_array_equal(lazy.train.y, eager.train.y)
    assert lazy.input_shape == eager.input_shape == (3, 6, 5)


def test_workers_decode_the_batches_the_sampler_chose(tmp_path: Path) -> None:
    cfg = write_images(tmp_path, per_class=8)
    eager, lazy = load_data(updated(cfg, in_memory=True), seed=0), load_data(updated(cfg, in_memory=False), seed=0)

    def epoch(split: object, workers: int) -> list[np.ndarray]:
        sampler = EpochBatchSampler(len(eager.train), 3, seed=5)
        sampler.set_epoch(1)
        return [x.numpy() for x, _ in batch_loader(split, sampler, workers, seed=5)]  # type: ignore[arg-type]

    for got, expected in zip(epoch(lazy.train, 2), epoch(eager.train, 0), strict=True):
        np.testing.assert_array_equal(got, expected)


def _truncated_png() -> bytes:
    """Noise (so the pixel data is long), cut half way: the header opens, decoding fails."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, size=(6, 5, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def test_a_file_broken_past_its_header_is_named_by_the_worker_in_one_line(tmp_path: Path) -> None:
    cfg = updated(write_images(tmp_path, per_class=4), in_memory=False, split={"val": 0.0, "test": 0.0})
    assert cfg.path is not None
    data = load_data(cfg, seed=0)
    (cfg.path / "dog" / "3.png").write_bytes(_truncated_png())  # damaged after load: the header opens, pixels do not
    sampler = EpochBatchSampler(len(data.train), 4, seed=0)
    with pytest.raises(DataError) as info:
        for _ in batch_loader(data.train, sampler, 2, seed=0):
            pass
    assert str(info.value).startswith("data.path: cannot decode image ") and "dog/3.png" in str(info.value)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_a_broken_header_is_skipped_and_counted_before_training(tmp_path: Path) -> None:
    cfg = updated(write_images(tmp_path, per_class=4), in_memory=False, skip_corrupt=True)
    assert cfg.path is not None
    (cfg.path / "cat" / "junk.png").write_bytes(b"not an image")
    data = load_data(cfg, seed=0)
    assert [Path(p).name for p in data.skipped] == ["junk.png"]
    assert len(data.train) + len(data.val) + len(data.test) == 8


def test_images_of_different_sizes_are_named_from_their_headers(tmp_path: Path) -> None:
    cfg = updated(write_images(tmp_path, per_class=3), in_memory=False)
    assert cfg.path is not None
    Image.new("RGB", (9, 9), (0, 0, 0)).save(cfg.path / "dog" / "big.png")
    with pytest.raises(DataError, match=r"^data\.image_size: .*dog/big\.png is 9x9 \(HxW\)"):
        load_data(cfg, seed=0)
