"""KServe manifests for a bundle: the ONNX model on KServe's Triton runtime, and ``torchport serve`` as a runtime.

Both speak the Open Inference Protocol v2, so a client written against ``torchport serve`` works against either.
The output folder is what gets uploaded to ``--storage-uri``: ``model-repository/`` (the Triton repository, the
same as ``--to triton`` writes) and ``bundle/`` (the manifest and the files it names). The YAML is written from
plain dicts; the tests load each document into the ``kserve`` package's own model classes.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from torchport.bundle.manifest import MANIFEST, Bundle
from torchport.errors import UsageError
from torchport.package.common import PackageOptions, copy_verified, kubernetes_name
from torchport.package.readmes import kserve_readme
from torchport.package.triton import write_repository

#: KServe's own ClusterServingRuntime for Triton (config/runtimes in KServe's repository)
TRITON_RUNTIME = "kserve-tritonserver"
#: ours: the runtime name and the model format it declares
TORCHPORT_RUNTIME = "torchport-serve"
TORCHPORT_FORMAT = "torchport-bundle"
#: KServe mounts the storage URI's files here and routes to this port
MODEL_DIR = "/mnt/models"
PORT = 8080
REPOSITORY, BUNDLE = "model-repository", "bundle"
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


def storage_uri(bundle: Bundle, options: PackageOptions) -> str:
    """``--storage-uri`` without its trailing slash; a PersistentVolumeClaim named after the model by default."""
    uri = options.storage_uri or f"pvc://torchport-models/{kubernetes_name(bundle.manifest.name)}"
    if not _URI.match(uri):
        raise UsageError(
            f"--storage-uri '{uri}': expected a URI that KServe's storage initializer reads "
            "(gs://, s3://, pvc://, https://, ...)"
        )
    return uri.rstrip("/")


def default_image() -> str:
    try:
        tag = version("torchport")
    except PackageNotFoundError:
        tag = "latest"
    return f"torchport-serve:{tag}"


def triton_service(name: str, uri: str) -> dict[str, Any]:
    """An InferenceService on KServe's Triton runtime; Triton loads every model of the repository."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": kubernetes_name(name)},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "onnx"},
                    "protocolVersion": "v2",
                    "runtime": TRITON_RUNTIME,
                    "storageUri": f"{uri}/{REPOSITORY}",
                }
            }
        },
    }


def _probe(path: str, period_s: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT}, "periodSeconds": period_s, "timeoutSeconds": 3}


def torchport_runtime(image: str) -> dict[str, Any]:
    """A ClusterServingRuntime whose container runs ``torchport serve`` on the bundle KServe downloads."""
    container = {
        "name": "kserve-container",
        "image": image,
        "command": ["torchport"],
        "args": ["serve", MODEL_DIR, "--host", "0.0.0.0", "--port", str(PORT)],
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": _probe("/v2/health/ready", 5),
        "livenessProbe": _probe("/v2/health/live", 10),
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    }
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": TORCHPORT_RUNTIME},
        "spec": {
            "supportedModelFormats": [{"name": TORCHPORT_FORMAT, "version": "1", "autoSelect": True}],
            "protocolVersions": ["v2"],
            "containers": [container],
        },
    }


def torchport_service(name: str, uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": f"{kubernetes_name(name)}-torchport"},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": TORCHPORT_FORMAT, "version": "1"},
                    "protocolVersion": "v2",
                    "runtime": TORCHPORT_RUNTIME,
                    "storageUri": f"{uri}/{BUNDLE}",
                }
            }
        },
    }


def copy_bundle(bundle: Bundle, target: Path) -> None:
    """The manifest and every file it vouches for: what ``torchport serve`` reads (runners and clients stay home)."""
    target.mkdir(parents=True)
    for entry in bundle.files():
        copy_verified(bundle, entry, target / entry.path)
    (target / MANIFEST).write_bytes((bundle.root / MANIFEST).read_bytes())


def _dump(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


def write_kserve(bundle: Bundle, out: Path, options: PackageOptions) -> None:
    name = bundle.manifest.name
    uri, image = storage_uri(bundle, options), options.image or default_image()
    write_repository(bundle, out / REPOSITORY, options)
    copy_bundle(bundle, out / BUNDLE)
    (out / "triton-inferenceservice.yaml").write_text(_dump([triton_service(name, uri)]))
    (out / "torchport-runtime.yaml").write_text(_dump([torchport_runtime(image), torchport_service(name, uri)]))
    (out / "README.md").write_text(kserve_readme(bundle.manifest, uri, image, kubernetes_name(name)))
