from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from torchport.config import DataConfig
from torchport.data import load_data
from torchport.errors import DataError
from torchport.registry import DATA_SOURCES
from torchport.tabular import feature_names

from .builders import table, updated, write_csv, write_images, write_npy, write_npz

# source -> (input_shape, input_dtype, task, class_names, num_outputs, n_feature_names, n_samples)
EXPECTED: dict[str, tuple[Any, ...]] = {
    "digits": ((1, 8, 8), "float32", "classification", [str(d) for d in range(10)], 10, 0, 1797),
    "iris": ((4,), "float32", "classification", ["setosa", "versicolor", "virginica"], 3, 4, 150),
    "wine": ((13,), "float32", "classification", ["class_0", "class_1", "class_2"], 3, 13, 178),
    "breast_cancer": ((30,), "float32", "classification", ["benign", "malignant"], 2, 30, 569),
    "csv": ((5,), "float32", "classification", ["cat", "dog"], 2, 5, 30),
    "parquet": ((5,), "float32", "regression", [], 1, 5, 30),
    "npy": ((3,), "float32", "classification", ["0", "1"], 2, 0, 40),
    "npz": ((5,), "int64", "regression", [], 2, 0, 40),
    "image_folder": ((3, 6, 5), "float32", "classification", ["cat", "dog"], 2, 0, 8),
}

ConfigFor = Callable[[str], DataConfig]


def test_every_registered_source_is_described() -> None:
    assert set(DATA_SOURCES.names()) == set(EXPECTED)


@pytest.mark.parametrize("source", sorted(DATA_SOURCES.names()))
def test_source_loads_with_the_promised_shapes_and_dtypes(source: str, config_for: ConfigFor) -> None:
    shape, dtype, task, class_names, num_outputs, n_features, n = EXPECTED[source]
    data = load_data(config_for(source), seed=0)
    assert (data.input_shape, data.input_dtype, data.task) == (shape, dtype, task)
    assert (data.class_names, data.num_outputs, len(data.feature_names)) == (
        class_names,
        num_outputs,
        n_features,
    )
    assert data.source == source or data.source.startswith(f"{source}:/")
    assert len(data.train) + len(data.val) + len(data.test) == n
    for split in (data.train, data.val, data.test):
        assert split.x.shape[1:] == shape and split.x.dtype == np.dtype(dtype)
        if task == "classification":
            assert split.y.dtype == np.int64 and split.y.shape == (len(split),)
            assert split.y.min(initial=0) >= 0 and split.y.max(initial=0) < num_outputs
        else:
            assert split.y.dtype == np.float32 and split.y.shape == (len(split), num_outputs)
    assert data.input_mean.dtype == data.input_std.dtype == np.float32
    assert (data.target_mean is None) == (task == "classification")


@pytest.mark.parametrize("source", sorted(DATA_SOURCES.names()))
def test_tables_carry_the_encoding_of_their_raw_columns(source: str, config_for: ConfigFor) -> None:
    """Named columns (csv, parquet, the bundled tables) describe how each became features; arrays and images not."""
    data = load_data(config_for(source), seed=0)
    if not data.feature_names:
        assert data.columns == ()
        return
    assert feature_names(data.columns) == data.feature_names
    if source in ("csv", "parquet"):
        assert [(c.name, c.kind) for c in data.columns] == [
            ("size", "numeric"),
            ("color", "categorical"),
            ("count", "numeric"),
        ]
        assert data.columns[1].categories == ("blue", "green", "red")
    else:
        assert {c.kind for c in data.columns} == {"numeric"}


def test_digits_keeps_raw_pixel_values() -> None:
    data = load_data(DataConfig(source="digits"), seed=0)
    assert (data.input_min, data.input_max) == (0.0, 16.0)


# --- csv and parquet ----------------------------------------------------------------------------------------


def test_csv_one_hot_encodes_string_columns_in_place(tmp_path: Path) -> None:
    data = load_data(updated(write_csv(tmp_path), split={"val": 0.0}), seed=0)
    assert data.feature_names == ["size", "color=blue", "color=green", "color=red", "count"]
    frame = table()
    order = np.argsort(frame["size"].to_numpy())  # val=0 keeps every row; match rows by their unique size
    x = data.train.x[np.argsort(data.train.x[:, 0])]
    np.testing.assert_allclose(x[:, 0], frame["size"].to_numpy()[order], rtol=1e-6)
    assert x[:, 1:4].sum(axis=1).tolist() == [1.0] * len(frame)
    np.testing.assert_array_equal(x[:, 3] == 1, frame["color"].to_numpy()[order] == "red")


def test_csv_defaults_to_last_column_target_and_all_other_features(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    table().drop(columns=["label"]).to_csv(path, index=False)
    data = load_data(DataConfig(source="csv", path=path), seed=0)
    assert data.task == "regression"
    assert data.feature_names == ["size", "color=blue", "color=green", "color=red", "count"]


def test_csv_listed_categorical_and_bool_columns_are_one_hot(tmp_path: Path) -> None:
    frame = pd.DataFrame({"zone": [3, 1, 3, 2] * 3, "flag": [True, False] * 6, "y": [0.5, 1.5, 2.5] * 4})
    frame.to_parquet(tmp_path / "t.parquet")
    cfg = DataConfig(source="parquet", path=tmp_path / "t.parquet", categorical=["zone"])
    data = load_data(cfg, seed=0)
    assert data.feature_names == ["zone=1", "zone=2", "zone=3", "flag=False", "flag=True"]


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("update", "key", "fragment"),
    [
        ({"target": "prize"}, "data.target", "did you mean 'price'"),
        ({"features": ["size", "colour"]}, "data.features", "column 'colour' not found"),
        ({"features": ["size", "label"]}, "data.features", "is the target"),
        ({"features": []}, "data.features", "empty"),
        ({"categorical": ["price"]}, "data.categorical", "not a feature column"),
    ],
)
def test_csv_column_errors_name_the_key(tmp_path: Path, update: dict[str, Any], key: str, fragment: str) -> None:
    cfg = updated(write_csv(tmp_path), **{"features": ["size", "color"], **update})
    with pytest.raises(DataError) as err:
        load_data(cfg, seed=0)
    message = str(err.value)
    assert message.startswith(f"{key}:") and fragment in message and "\n" not in message
    if "not found" in fragment or "did you mean" in fragment:
        assert "columns are: size, color, count, price, label" in message


def test_csv_unknown_target_lists_columns_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, pd.DataFrame({"a": [1, 2], "b": [3, 4], "c": [5, 6]}))
    with pytest.raises(
        DataError, match=r"^data\.target: column 'price' not found in .*bad\.csv; columns are: a, b, c$"
    ):
        load_data(DataConfig(source="csv", path=path, target="price"), seed=0)


@pytest.mark.parametrize(("column", "key"), [("b", "data.features"), ("c", "data.target")])
def test_csv_missing_values_name_column_and_count(tmp_path: Path, column: str, key: str) -> None:
    frame = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0), "c": np.arange(10) % 2})
    frame[column] = frame[column].astype(float)
    frame.loc[[2, 5, 7], column] = np.nan
    path = _write(tmp_path, frame)
    with pytest.raises(DataError, match=rf"^{key}: column '{column}' has 3 of 10 rows with missing values"):
        load_data(DataConfig(source="csv", path=path), seed=0)


def test_unreadable_table_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"^data\.path: cannot read .*broken\.parquet as Parquet"):
        load_data(DataConfig(source="parquet", path=path), seed=0)


def test_header_only_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n")
    with pytest.raises(DataError, match=r"^data\.path: .* has no rows"):
        load_data(DataConfig(source="csv", path=path), seed=0)


# --- npy and npz --------------------------------------------------------------------------------------------


def test_integer_features_stay_int64_without_normalisation(tmp_path: Path) -> None:
    data = load_data(write_npz(tmp_path), seed=0)
    assert data.train.x.dtype == np.int64
    np.testing.assert_array_equal(data.input_mean, np.zeros(5, np.float32))
    np.testing.assert_array_equal(data.input_std, np.ones(5, np.float32))


def test_one_dimensional_features_become_one_feature_per_sample(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.linspace(0, 1, 20))
    np.save(tmp_path / "y.npy", np.linspace(0, 1, 20) * 3.3)
    data = load_data(DataConfig(source="npy", path=tmp_path / "x.npy", targets=tmp_path / "y.npy"), seed=0)
    assert data.input_shape == (1,) and data.task == "regression"


def test_npy_length_mismatch_names_targets(tmp_path: Path) -> None:
    cfg = write_npy(tmp_path)
    np.save(tmp_path / "y.npy", np.arange(39) % 2)
    with pytest.raises(DataError, match=r"^data\.targets: 39 targets for 40 samples"):
        load_data(cfg, seed=0)


def test_npz_length_mismatch_names_y_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"^data\.y_key: 4 targets for 5 samples"):
        load_data(DataConfig(source="npz", path=tmp_path / "d.npz"), seed=0)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    cfg = write_npy(tmp_path)
    np.save(tmp_path / "y.npy", np.array(["a", 1] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"^data\.targets: cannot load .*y\.npy"):
        load_data(cfg, seed=0)


def test_string_targets_from_npy_are_labels(tmp_path: Path) -> None:
    cfg = write_npy(tmp_path)
    np.save(tmp_path / "y.npy", np.array(["yes", "no"] * 20))
    assert load_data(cfg, seed=0).class_names == ["no", "yes"]


@pytest.mark.parametrize(("update", "key"), [({"x_key": "inputs"}, "data.x_key"), ({"y_key": "labels"}, "data.y_key")])
def test_npz_missing_array_names_the_key(tmp_path: Path, update: dict[str, str], key: str) -> None:
    cfg = updated(write_npz(tmp_path), **update)
    with pytest.raises(DataError, match=rf"^{key}: array '\w+' not found in .*; arrays are: x, y$"):
        load_data(cfg, seed=0)


def test_npy_needs_targets(tmp_path: Path) -> None:
    cfg = updated(write_npy(tmp_path), targets=None)
    with pytest.raises(DataError, match=r"^data\.targets: required for source 'npy'"):
        load_data(cfg, seed=0)


def test_non_finite_features_are_refused(tmp_path: Path) -> None:
    cfg = write_npy(tmp_path)
    x = np.ones((40, 3))
    x[7, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"^data\.path: 1 sample\(s\) hold NaN .*first at sample 7"):
        load_data(cfg, seed=0)


def test_missing_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^data\.path: file not found"):
        load_data(DataConfig(source="npz", path=tmp_path / "nope.npz"), seed=0)


# --- image folders ------------------------------------------------------------------------------------------


def test_images_decode_to_raw_channel_first_pixels(tmp_path: Path) -> None:
    data = load_data(updated(write_images(tmp_path), split={"val": 0.0}), seed=0)
    blue = data.train.x[:, 2]
    assert data.train.x.shape == (8, 3, 6, 5) and np.all(blue == 200.0)
    assert sorted(data.train.x[:, 0, 0, 0].tolist()) == [0.0] * 4 + [40.0] * 4
    np.testing.assert_array_equal(data.train.y, (data.train.x[:, 0, 0, 0] == 40.0).astype(np.int64))


def test_grayscale_and_resize(tmp_path: Path) -> None:
    cfg = updated(write_images(tmp_path), color_mode="grayscale", image_size=(4, 3))
    assert cfg.path is not None
    Image.new("P", (7, 7)).save(cfg.path / "dog" / "palette.GIF")  # any size, mode and suffix case
    Image.new("RGB", (3, 9)).save(cfg.path / "dog" / "photo.jpeg")
    data = load_data(cfg, seed=0)
    assert data.input_shape == (1, 4, 3) and data.input_mean.shape == (1, 1, 1)
    assert len(data.train) + len(data.val) == 10


def test_images_of_different_sizes_need_image_size(tmp_path: Path) -> None:
    cfg = write_images(tmp_path)
    assert cfg.path is not None
    Image.new("RGB", (9, 9)).save(cfg.path / "dog" / "big.png")
    with pytest.raises(DataError, match=r"^data\.image_size: .*big\.png is 9x9 \(HxW\)"):
        load_data(cfg, seed=0)
    assert load_data(updated(cfg, image_size=(6, 5)), seed=0).input_shape == (3, 6, 5)


def test_undecodable_image_names_the_file(tmp_path: Path) -> None:
    cfg = write_images(tmp_path)
    assert cfg.path is not None
    (cfg.path / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"^data\.path: cannot decode image .*cat/broken\.png"):
        load_data(cfg, seed=0)


def test_empty_image_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^data\.path: .* holds no class folders"):
        load_data(DataConfig(source="image_folder", path=tmp_path), seed=0)
    cfg = write_images(tmp_path)
    assert cfg.path is not None
    (cfg.path / "emu").mkdir()
    (cfg.path / "emu" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"^data\.path: class folder .*emu holds no images"):
        load_data(cfg, seed=0)


def test_one_class_is_not_a_classification_problem(tmp_path: Path) -> None:
    cfg = write_images(tmp_path, classes=("cat",))
    with pytest.raises(DataError, match=r"^data\.path: every sample has the label 'cat'"):
        load_data(cfg, seed=0)
