"""`torchport package --to kserve`: every YAML document loads into the `kserve` package's model classes (and the
Kubernetes ones they are made of) with no field dropped or misspelt, and what the documents point at serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format

from torchport.bundle.manifest import read_bundle
from torchport.errors import UsageError
from torchport.package import package_bundle
from torchport.serve.local import local_server

from .helpers import assert_close, golden, infer, triton_model_config

LOADER = Path(__file__).with_name("kserve_load.py")
URI = "gs://models-bucket/digits"


def misspelt(source: Path, target: Path, old: str, new: str) -> Path:
    """A copy of a YAML file with one key renamed, wherever it occurs."""
    target.write_text(source.read_text().replace(f"{old}:", f"{new}:"))
    return target


@pytest.fixture(scope="module")
def kserve_out(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kserve") / "digits"
    return package_bundle(digits_bundle, "kserve", out, storage_uri=URI + "/", image="registry.example/ts:1")


@pytest.fixture(scope="module")
def loaded(kserve_out: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What kserve_load.py made of each file (in one process of its own): the outputs and two misspelt copies."""
    scratch = tmp_path_factory.mktemp("misspelt")
    runtime = kserve_out / "torchport-runtime.yaml"
    files = {
        "triton": kserve_out / "triton-inferenceservice.yaml",
        "torchport": runtime,
        "kserve_key": misspelt(runtime, scratch / "storage.yaml", "storageUri", "storageURI"),
        "kubernetes_key": misspelt(runtime, scratch / "probe.yaml", "readinessProbe", "readynessProbe"),
    }
    done = subprocess.run(
        [sys.executable, str(LOADER), *map(str, files.values())], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    return {name: results[str(path)] for name, path in files.items()}


def test_the_triton_inference_service_loads_and_points_at_a_triton_repository(
    loaded: dict[str, Any], kserve_out: Path
) -> None:
    (service,) = loaded["triton"]["documents"]
    assert service["class"] == "V1beta1InferenceService"
    model = service["document"]["spec"]["predictor"]["model"]
    assert (model["runtime"], model["protocolVersion"], model["modelFormat"]["name"]) == (
        "kserve-tritonserver", "v2", "onnx",
    )  # fmt: skip
    assert model["storageUri"] == f"{URI}/model-repository"  # the trailing slash of --storage-uri is dropped
    config = (kserve_out / "model-repository" / "digits" / "config.pbtxt").read_text()
    assert text_format.Parse(config, triton_model_config().ModelConfig()).platform == "onnxruntime_onnx"


def test_the_torchport_runtime_and_its_service_load(loaded: dict[str, Any], kserve_out: Path) -> None:
    runtime, service = loaded["torchport"]["documents"]
    assert (runtime["class"], service["class"]) == ("V1alpha1ClusterServingRuntime", "V1beta1InferenceService")
    spec = runtime["document"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "registry.example/ts:1"
    assert [*container["command"], *container["args"]] == [
        *["torchport", "serve", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"]
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert spec["protocolVersions"] == ["v2"]
    model = service["document"]["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["document"]["metadata"]["name"]
    assert model["modelFormat"]["name"] == spec["supportedModelFormats"][0]["name"]
    assert model["storageUri"] == f"{URI}/bundle"
    assert "kubectl apply -f torchport-runtime.yaml" in (kserve_out / "README.md").read_text()


def test_a_misspelt_field_fails_the_load(loaded: dict[str, Any]) -> None:
    """The loads above mean something: a key kserve's classes (or Kubernetes') do not know is refused."""
    assert loaded["kserve_key"] == {
        "error": "InferenceService.spec.predictor.model.storageURI: not a field of V1beta1ModelSpec"
    }
    assert loaded["kubernetes_key"]["error"].startswith("ClusterServingRuntime.spec.containers[0].readynessProbe:")


def test_the_yaml_is_plain_kubernetes_yaml(kserve_out: Path) -> None:
    documents = list(yaml.safe_load_all((kserve_out / "torchport-runtime.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["ClusterServingRuntime", "InferenceService"]
    assert all(d["metadata"]["name"].replace("-", "").isalnum() for d in documents)  # DNS-1123 labels


@pytest.mark.slow
def test_the_runtimes_command_serves_the_uploaded_bundle(kserve_out: Path, tmp_path: Path) -> None:
    """What KServe downloads to /mnt/models, served as the runtime's container would (on 127.0.0.1)."""
    bundle = kserve_out / "bundle"
    read_bundle(bundle)
    inputs, outputs = golden(bundle)
    with local_server([bundle], tmp_path / "serve.log", via_cli=True) as (_, port):
        got = infer(port, inputs)
    assert_close(got, outputs, bundle)


def test_a_storage_uri_without_a_scheme_is_refused(digits_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--storage-uri 'models/digits': expected a URI"):
        package_bundle(digits_bundle, "kserve", tmp_path / "out", storage_uri="models/digits")
