"""`torchport package --to mlflow`: an MLflow model that MLflow loads, with or without torchport installed, and
that answers the golden outputs; also through MLflow's model registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
import yaml

from torchport.bundle.manifest import read_bundle
from torchport.package import package_bundle
from torchport.package.torchport_onnx_pyfunc import OnnxPyfunc

from .helpers import artifact_sha, assert_close, golden, sha256


@pytest.fixture(scope="module")
def mlflow_model(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_bundle(digits_bundle, "mlflow", tmp_path_factory.mktemp("mlflow") / "digits")


def test_the_model_folder_carries_the_manifests_signature(mlflow_model: Path, digits_bundle: Path) -> None:
    described = yaml.safe_load((mlflow_model / "MLmodel").read_text())
    flavour = described["flavors"]["python_function"]
    assert flavour["loader_module"] == "torchport_onnx_pyfunc"
    assert (mlflow_model / flavour["code"] / "torchport_onnx_pyfunc.py").is_file()
    inputs = json.loads(described["signature"]["inputs"])
    outputs = json.loads(described["signature"]["outputs"])
    assert inputs == [{"name": "input", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1, 8, 8]}}]
    assert [(o["name"], o["tensor-spec"]["shape"]) for o in outputs] == [
        ("logits", [-1, 10]),
        ("probabilities", [-1, 10]),
    ]
    example = np.asarray(json.loads((mlflow_model / "input_example.json").read_text()), dtype=np.float32)
    np.testing.assert_array_equal(example, golden(digits_bundle)[0]["input"][:1])
    onnx_file = mlflow_model / flavour["data"] / "model.onnx"
    assert sha256(onnx_file) == artifact_sha(read_bundle(digits_bundle), None)
    assert "mlflow.pyfunc.load_model" in (mlflow_model / "README.md").read_text()


def test_mlflow_loads_it_and_predict_answers_the_golden_outputs(mlflow_model: Path, digits_bundle: Path) -> None:
    inputs, outputs = golden(digits_bundle)
    model = mlflow.pyfunc.load_model(str(mlflow_model))
    assert_close(model.predict(inputs["input"]), outputs, digits_bundle)
    assert_close(model.predict(inputs), outputs, digits_bundle)  # a dict by input name works too


@pytest.mark.slow
def test_it_loads_where_torchport_cannot_be_imported(mlflow_model: Path, digits_bundle: Path, tmp_path: Path) -> None:
    """The hand-off needs mlflow and onnxruntime only: torchport is made unimportable in the loading process."""
    inputs, outputs = golden(digits_bundle)
    np.save(tmp_path / "input.npy", inputs["input"])
    script = (
        "import sys, numpy as np, mlflow.pyfunc\n"
        "sys.modules['torchport'] = None  # any `import torchport` now raises ImportError\n"
        f"model = mlflow.pyfunc.load_model({str(mlflow_model)!r})\n"
        f"result = model.predict(np.load({str(tmp_path / 'input.npy')!r}))\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, **result)\n"
        "assert not [name for name in sys.modules if name.startswith('torchport.')]\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_close(dict(np.load(tmp_path / "out.npz")), outputs, digits_bundle)


@pytest.mark.slow
def test_logged_registered_and_loaded_back_by_models_uri(
    mlflow_model: Path, digits_bundle: Path, tmp_path: Path
) -> None:
    """MLflow 3 refuses the `file:` tracking store unless told otherwise (MLFLOW_ALLOW_FILE_STORE): the local
    store it recommends is SQLite, a file too."""
    inputs, outputs = golden(digits_bundle)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("package", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(mlflow_model), artifact_path="model")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "digits")
        model = mlflow.pyfunc.load_model(f"models:/digits/{version.version}")
        assert_close(model.predict(inputs["input"]), outputs, digits_bundle)
    finally:
        mlflow.set_tracking_uri(previous)


def test_the_int8_variant_is_the_model_when_asked(digits_bundle: Path, tmp_path: Path) -> None:
    out = package_bundle(digits_bundle, "mlflow", tmp_path / "int8", variant="int8")
    described = yaml.safe_load((out / "MLmodel").read_text())
    assert described["metadata"]["torchport_variant"] == "int8"
    assert sha256(out / "data" / "model" / "model.onnx") == artifact_sha(read_bundle(digits_bundle), "int8")
    inputs, outputs = golden(digits_bundle)
    predicted = mlflow.pyfunc.load_model(str(out)).predict(inputs["input"])
    assert predicted["probabilities"].shape == outputs["probabilities"].shape
    assert np.isfinite(predicted["logits"]).all()


def test_the_loader_reshapes_flat_rows_and_names_a_wrong_shape(mlflow_model: Path, digits_bundle: Path) -> None:
    """Rows of flattened samples (a CSV, a DataFrame) are reshaped; anything else is refused naming the input."""
    inputs, outputs = golden(digits_bundle)
    loader = OnnxPyfunc(mlflow_model / "data" / "model")
    assert_close(loader.predict(inputs["input"].reshape(8, 64)), outputs, digits_bundle)
    with pytest.raises(ValueError, match=r"^input 'input': expected shape \['batch', 1, 8, 8\], got \[8, 63\]$"):
        loader.predict(inputs["input"].reshape(8, 64)[:, :63])
    with pytest.raises(ValueError, match=r"^input 'input' is missing"):
        loader.predict({"image": inputs["input"]})
