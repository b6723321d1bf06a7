"""The one tabular encoder: raw rows to the float features, the same for training and for every caller after.

Training's encoding of examples/data/houses.csv must stay bit-identical to what torchport has always produced (the
reference below is the encoder as it was before this module existed, kept here verbatim), and a bundle's manifest
must carry enough to repeat it: raw CSV rows encoded by the manifest's ``columns`` give training's own matrix and
the same ONNX Runtime outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from torchport.config import load_config
from torchport.data.sources import read_source
from torchport.errors import DataError
from torchport.tabular import ColumnEncoding, encode_rows, feature_names, learn_encodings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
HOUSES = EXAMPLES / "data" / "houses.csv"
HOUSE_FEATURES = ["area_m2", "bedrooms", "age_years", "distance_km", "neighbourhood"]

COLOR = ColumnEncoding("color", "categorical", ("blue", "red"))
SIZE = ColumnEncoding("size", "numeric")


def reference_encoding(frame: pd.DataFrame, features: list[str], categorical: set[str]) -> tuple[np.ndarray, list[str]]:
    """torchport's encoder before tabular.py (data/sources.py ``_encode_features`` + targets.py ``encode_labels``):
    numbers as float32, categories one-hot over their sorted values, in the order of ``features``."""
    blocks, names = [], []
    for name in features:
        if name in categorical:
            values = frame[name].to_numpy(dtype=object)
            try:
                classes, codes = np.unique(values, return_inverse=True)
            except TypeError:
                classes, codes = np.unique(values.astype(str), return_inverse=True)
            blocks.append(np.eye(len(classes), dtype=np.float32)[codes.reshape(-1)])
            names += [f"{name}={label}" for label in classes]
        else:
            blocks.append(frame[name].to_numpy(dtype=np.float32)[:, None])
            names.append(name)
    return np.concatenate(blocks, axis=1), names


# --- training's encoding is what it always was ---------------------------------------------------------------


def test_houses_csv_encodes_bit_identically_to_the_encoder_before() -> None:
    frame = pd.read_csv(HOUSES)
    expected, expected_names = reference_encoding(frame, HOUSE_FEATURES, {"neighbourhood"})
    raw = read_source(load_config(EXAMPLES / "tabular_csv.yaml").data)
    assert raw.feature_names == expected_names
    assert raw.feature_names[-3:] == ["neighbourhood=centre", "neighbourhood=suburb", "neighbourhood=village"]
    assert raw.x.dtype == np.float32 and raw.x.tobytes() == expected.tobytes()
    assert [column.name for column in raw.columns] == HOUSE_FEATURES
    assert raw.columns[-1] == ColumnEncoding("neighbourhood", "categorical", ("centre", "suburb", "village"))


def test_values_sort_by_their_own_order_and_mixed_ones_by_text() -> None:
    frame = pd.DataFrame(
        {
            "zone": [10, 2, 10, 1],
            "flag": [True, False, True, True],
            "mixed": pd.Series([3, "b", "a", 3], dtype=object),
            "price": [1.5, 2.25, 3.0, 4.125],
        }
    )
    features, categorical = ["zone", "flag", "mixed", "price"], {"zone", "flag", "mixed"}
    encodings = learn_encodings(frame, features, categorical)
    assert [column.categories for column in encodings] == [("1", "2", "10"), ("False", "True"), ("3", "a", "b"), ()]
    expected, names = reference_encoding(frame, features, categorical)
    assert feature_names(encodings) == names
    assert encode_rows(frame, encodings).tobytes() == expected.tobytes()


def test_values_equal_as_values_but_not_as_text_are_refused() -> None:
    """1 and 1.0 are one value to np.unique but two texts: no single category could match both."""
    frame = pd.DataFrame({"code": pd.Series([1, 1.0, 2], dtype=object)})
    with pytest.raises(DataError, match=r"^column 'code': its values mix types .*give the column values of one type$"):
        learn_encodings(frame, ["code"], {"code"})
    mixed = pd.DataFrame({"code": pd.Series([1, "1", 2], dtype=object)})  # not comparable: matched as text, as ever
    assert learn_encodings(mixed, ["code"], {"code"})[0].categories == ("1", "2")


# --- raw rows in, as callers give them ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows",
    [
        {"size": [1.5, 2.0], "color": ["red", "blue"]},
        {"size": np.array([[1.5], [2.0]]), "color": np.array([b"red", b"blue"], dtype=object)},  # (N, 1), BYTES
        {"color": np.array(["red", "blue"]), "size": np.array([1.5, 2.0], dtype=np.float32), "extra": [0, 0]},
        pd.DataFrame({"color": ["red", "blue"], "size": [1.5, 2.0], "target": ["x", "y"]}),
    ],
    ids=["lists", "column-vectors-and-bytes", "arrays-with-an-extra-column", "dataframe"],
)
def test_raw_rows_in_any_form_encode_alike(rows: Any) -> None:
    x = encode_rows(rows, [SIZE, COLOR])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[1.5, 0.0, 1.0], [2.0, 1.0, 0.0]])


def test_one_value_per_column_is_one_row_and_numbers_match_categories_by_text() -> None:
    zone = ColumnEncoding("zone", "categorical", ("1", "2", "10"))
    np.testing.assert_array_equal(encode_rows({"zone": 10, "size": 3}, [zone, SIZE]), [[0, 0, 1, 3]])
    np.testing.assert_array_equal(encode_rows({"zone": ["2"], "size": [True]}, [zone, SIZE]), [[0, 1, 0, 1]])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"size": [1.0]}, "column 'color' is missing; the model was trained on: size, color"),
        (
            {"size": [1.0], "color": ["purple"]},
            "column 'color': value 'purple' was not seen in training; known: blue, red",
        ),
        ({"size": ["big"], "color": ["red"]}, "column 'size': value 'big' in row 0 is not a number"),
        ({"size": [1.0, None], "color": ["red"] * 2}, "column 'size': value None in row 1 is not a number"),
        ({"size": [1.0, np.nan], "color": ["red"] * 2}, "column 'size': value nan in row 1 is not a finite number"),
        ({"size": [1.0, 2.0], "color": ["red"]}, "columns have unequal numbers of rows: 'color' has 1, 'size' has 2"),
        ({"size": np.zeros((2, 2)), "color": ["red"] * 2}, "column 'size': expected one value per row"),
        ({"size": [1.0], "color": [b"\xff"]}, "column 'color': value in row 0 is not UTF-8 text"),
    ],
    ids=["missing", "unseen", "text-for-number", "none", "nan", "unequal", "matrix", "not-utf8"],
)
def test_bad_rows_are_refused_in_one_line_naming_the_column(rows: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError) as info:
        encode_rows(rows, [SIZE, COLOR])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_long_list_of_known_categories_is_cut_to_one_line() -> None:
    many = ColumnEncoding("city", "categorical", tuple(f"c{i:03d}" for i in range(500)))
    with pytest.raises(DataError, match=r"known: c000, c001, .*c019, \.\.\. \(500 in all\)$"):
        encode_rows({"city": ["atlantis"]}, [many])


def test_encodings_round_trip_through_plain_dicts() -> None:
    assert ColumnEncoding.from_dict(COLOR.to_dict(), "x") == COLOR
    with pytest.raises(DataError, match=r"^meta\.columns\[1\]: name must be text and kind one of numeric, categorical"):
        ColumnEncoding.from_dict({"name": "a", "kind": "ordinal", "categories": []}, "meta.columns[1]")


def test_training_names_the_config_key_and_file_for_a_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1.0,x,0\ninf,y,1\n2.0,x,0\n")
    config = load_config(EXAMPLES / "tabular_csv.yaml", [f"data.path={path}", "data.target=y", "data.categorical=[]"])
    with pytest.raises(
        DataError, match=r"^data\.features: column 'a': value inf in row 1 is not a finite number \(in "
    ):
        read_source(config.data)


# --- a trained bundle: CSV rows in give training's own answer ------------------------------------------------------


@pytest.fixture
def houses_bundle(exported_houses: Path) -> Path:
    return exported_houses


def test_the_checkpoint_and_manifest_carry_the_encoding(houses_bundle: Path) -> None:
    from torchport.bundle.manifest import read_bundle
    from torchport.train.resume import load_trained_model

    meta, _ = load_trained_model(houses_bundle / "checkpoints" / "best.pt")
    trained = read_source(load_config(EXAMPLES / "tabular_csv.yaml").data).columns
    assert meta.columns == trained
    preprocessing = read_bundle(houses_bundle / "bundle").manifest.preprocessing
    assert [column.model_dump() for column in preprocessing.columns] == [column.to_dict() for column in trained]
    assert preprocessing.feature_names == feature_names(trained)


def test_csv_rows_in_give_the_answer_of_trainings_own_encoding(houses_bundle: Path) -> None:
    from torchport.bundle.manifest import read_bundle
    from torchport.sessions import onnxruntime_session

    bundle = read_bundle(houses_bundle / "bundle")
    rows = pd.read_csv(HOUSES)  # raw rows, the target column included
    encoded = encode_rows(rows, bundle.manifest.preprocessing.columns)
    training = read_source(load_config(EXAMPLES / "tabular_csv.yaml").data).x
    assert encoded.tobytes() == training.tobytes()

    session = onnxruntime_session(bundle.verified_path(bundle.manifest.artifacts[0]))
    input_name = bundle.manifest.inputs[0].name
    from_rows = session.run(None, {input_name: encode_rows(rows.iloc[:17], bundle.manifest.preprocessing.columns)})
    from_training = session.run(None, {input_name: training[:17]})
    for got, want in zip(from_rows, from_training, strict=True):
        np.testing.assert_array_equal(got, want)
    # The golden inputs (validation samples as training encoded them) are CSV rows too.
    golden = bundle.read_tensor(bundle.manifest.golden.inputs[0])
    assert all((encoded == sample).all(axis=1).any() for sample in golden)


def test_bundle_predict_takes_raw_rows_and_names_a_bad_column(houses_bundle: Path) -> None:
    """`tp.Bundle.predict` on a DataFrame of raw CSV rows answers as ONNX Runtime on training's own encoding; a
    category training never saw is one line naming the column."""
    from torchport.predict import Bundle

    bundle = Bundle.open(houses_bundle / "bundle")
    rows = pd.read_csv(HOUSES).iloc[:9]
    training = read_source(load_config(EXAMPLES / "tabular_csv.yaml").data).x[:9]
    from_rows = bundle.predict(rows)
    from_training = bundle.predict(training)
    assert from_rows.keys() == from_training.keys()
    for name, want in from_training.items():
        np.testing.assert_array_equal(from_rows[name], want)
    as_columns = bundle.predict({column: rows[column].tolist() for column in rows.columns})
    for name, want in from_training.items():
        np.testing.assert_array_equal(as_columns[name], want)

    strange = rows.assign(neighbourhood="atlantis")
    with pytest.raises(DataError, match=r"^column 'neighbourhood': value 'atlantis' was not seen in training"):
        bundle.predict(strange)
