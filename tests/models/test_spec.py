"""The model contract: ``ModelMeta`` made once from the data, stored in checkpoints as the plain dict they have
always held, read back refusing what it does not know; ``ModelSpec`` rebuilt from it alone."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from torchport.config import load_config
from torchport.data import load_data
from torchport.errors import CheckpointError
from torchport.models.compose import build_model
from torchport.models.spec import ModelMeta, model_meta, model_spec
from torchport.tabular import ColumnEncoding

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The keys of the ``meta`` dict in every checkpoint written so far (format 1).
CHECKPOINT_META_KEYS = {
    "task",
    "input_shape",
    "input_dtype",
    "num_outputs",
    "class_names",
    "feature_names",
    "input_mean",
    "input_std",
    "target_mean",
    "target_std",
    "input_min",
    "input_max",
    "source",
}
# Keys added since, which a checkpoint written before them lacks: ``from_dict`` reads them as their default.
LATER_META_KEYS = {"columns", "stats_samples"}


@pytest.fixture(scope="module")
def iris_meta() -> ModelMeta:
    return model_meta(load_data(load_config(EXAMPLES / "iris_mlp.yaml").data, seed=0))


def _through_torch_save(value: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_meta_is_stored_as_the_plain_dict_checkpoints_always_held(iris_meta: ModelMeta) -> None:
    stored = iris_meta.to_dict()
    assert set(stored) == CHECKPOINT_META_KEYS | LATER_META_KEYS
    assert stored["input_shape"] == [4] and isinstance(stored["input_shape"], list)
    assert stored["class_names"] == ["setosa", "versicolor", "virginica"]
    assert isinstance(stored["input_mean"], torch.Tensor) and stored["target_mean"] is None
    loaded = ModelMeta.from_dict(_through_torch_save(stored), "ckpt.pt")  # weights_only loads plain types only
    assert loaded.input_shape == (4,) and loaded.class_names == iris_meta.class_names
    assert loaded.task == "classification" and loaded.num_outputs == 3
    assert torch.equal(loaded.input_std, iris_meta.input_std)


def test_a_model_rebuilds_from_the_stored_meta_alone(iris_meta: ModelMeta) -> None:
    config = load_config(EXAMPLES / "iris_mlp.yaml")
    trained = build_model(model_spec(config, iris_meta))
    rebuilt = build_model(model_spec(config, ModelMeta.from_dict(iris_meta.to_dict(), "ckpt.pt")))
    rebuilt.load_state_dict(trained.state_dict())
    x = torch.rand(5, 4)
    torch.testing.assert_close(rebuilt(x), trained(x), rtol=0, atol=0)


def test_meta_missing_a_key_is_refused_in_one_line_naming_the_checkpoint(iris_meta: ModelMeta) -> None:
    stored = iris_meta.to_dict()
    del stored["input_dtype"]
    with pytest.raises(CheckpointError) as info:
        ModelMeta.from_dict(stored, "runs/x/checkpoints/best.pt")
    message = str(info.value)
    assert "runs/x/checkpoints/best.pt" in message and "lacks input_dtype" in message
    assert "\n" not in message


def test_meta_with_an_unknown_key_is_refused(iris_meta: ModelMeta) -> None:
    with pytest.raises(CheckpointError, match="has unknown colour"):
        ModelMeta.from_dict({**iris_meta.to_dict(), "colour": "red"}, "ckpt.pt")
    with pytest.raises(CheckpointError, match="no model description"):
        ModelMeta.from_dict(None, "ckpt.pt")


def test_the_column_encodings_travel_as_plain_dicts(tmp_path: Path) -> None:
    meta = model_meta(load_data(load_config(EXAMPLES / "tabular_csv.yaml").data, seed=0))
    neighbourhood = ColumnEncoding("neighbourhood", "categorical", ("centre", "suburb", "village"))
    assert meta.columns[-1] == neighbourhood and len(meta.columns) == 5
    stored = _through_torch_save(meta.to_dict())
    assert stored["columns"][-1] == {
        "name": "neighbourhood",
        "kind": "categorical",
        "categories": list(neighbourhood.categories),
    }
    assert ModelMeta.from_dict(stored, "ckpt.pt").columns == meta.columns


def test_a_checkpoint_from_before_columns_reads_as_no_table(iris_meta: ModelMeta) -> None:
    stored = {key: value for key, value in iris_meta.to_dict().items() if key in CHECKPOINT_META_KEYS}
    loaded = ModelMeta.from_dict(_through_torch_save(stored), "old.pt")
    assert loaded.columns == () and loaded.feature_names == iris_meta.feature_names


def test_bad_stored_columns_are_refused_naming_the_checkpoint(iris_meta: ModelMeta) -> None:
    stored = iris_meta.to_dict()
    stored["columns"] = [{"name": "a", "kind": "numeric", "categories": []}, {"name": "b", "kind": "colour"}]
    with pytest.raises(CheckpointError, match=r"^checkpoint ckpt\.pt: meta\.columns\[1\]: expected \{name, kind"):
        ModelMeta.from_dict(stored, "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"'meta\.columns' must be a list"):
        ModelMeta.from_dict({**iris_meta.to_dict(), "columns": "area"}, "ckpt.pt")
