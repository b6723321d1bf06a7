"""The README each hand-off folder carries: how to deploy it, and what was checked before it left torchport."""

from __future__ import annotations

from torchport.bundle.manifest import Manifest
from torchport.package.common import PackageOptions

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"


def _shape(shape: list[int | str]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def tensor_table(manifest: Manifest) -> str:
    rows = [f"| input | `{s.name}` | {s.dtype} | `{_shape(list(s.shape))}` |" for s in manifest.inputs]
    rows += [f"| output | `{s.name}` | {s.dtype} | `{_shape(list(s.shape))}` |" for s in manifest.outputs]
    head = "| | name | dtype | shape (`batch`: any size) |\n| --- | --- | --- | --- |\n"
    note = "The inputs are raw: the normalisation is inside the graph." if manifest.preprocessing.inside_graph else ""
    return head + "\n".join(rows) + ("\n\n" + note if note else "")


def _origin(manifest: Manifest) -> str:
    made = manifest.provenance
    return (
        f"Written by `torchport package` from the bundle of model `{manifest.name}` (config `{made.config_name}`, "
        f"hash `{made.config_hash[:12]}`, exported {made.created} with torch {made.torch}); every model file was "
        "copied only after its SHA-256 matched the bundle's manifest."
    )


def triton_readme(manifest: Manifest, models: list[str], options: PackageOptions, batch: int) -> str:
    name = manifest.name
    if options.variant and options.variant_as_version:
        layout = f"`{name}`: version 1 is the fp32 export, version 2 the {options.variant} variant (both served)."
    elif options.variant:
        layout = f"`{name}` is the fp32 export; `{name}.{options.variant}` the {options.variant} variant."
    else:
        layout = f"`{name}` is the fp32 export (version 1)."
    opset = next((a.opset for a in manifest.artifacts if a.kind == "onnx" and a.variant is None), None)
    batching = (
        f"`max_batch_size: {batch}` with dynamic batching as `torchport serve` batches"
        if batch
        else "no batching (`max_batch_size: 0`): dims are the full shapes"
    )
    return f"""# {name}: a Triton Inference Server model repository

{_origin(manifest)}

Models: {", ".join(f"`{m}`" for m in models)}. {layout} Each folder holds `config.pbtxt` (ONNX Runtime backend,
{batching}), `labels.txt` for classifiers (Triton's classification extension) and `<version>/model.onnx`.

## Deploy

```sh
docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD":/models \\
    {TRITON_IMAGE} tritonserver --model-repository=/models
curl -s localhost:8000/v2/models/{name}          # metadata
```

Any Triton release whose ONNX Runtime backend reads opset {opset} will do. Or copy this folder to object storage
and point Triton's `--model-repository` (or KServe: `torchport package --to kserve`) at it. Triton speaks the same
Open Inference Protocol v2 as `torchport serve`: clients keep the model name, tensor names and datatypes, over
REST (port 8000) and gRPC (8001). Triton picks a GPU when it has one; add
an `instance_group` to `config.pbtxt` to choose.

## Tensors

{tensor_table(manifest)}
"""


def _upload(uri: str) -> str:
    """How to put this folder's contents at the storage URI, by its scheme."""
    scheme = uri.partition("://")[0]
    commands = {"gs": f"`gsutil -m cp -r . {uri}`", "s3": f"`aws s3 cp --recursive . {uri}`"}
    if scheme == "pvc":
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        return f"copy it into the PersistentVolumeClaim `{claim}` under `/{path}` (e.g. from a pod that mounts it)"
    return f"e.g. {commands[scheme]}" if scheme in commands else "with your storage's own tool"


def kserve_readme(manifest: Manifest, storage_uri: str, image: str, service: str) -> str:
    name = manifest.name
    return f"""# {name}: KServe InferenceServices

{_origin(manifest)}

Two ways to serve the model on KServe over the Open Inference Protocol v2. Both read their model files from
`{storage_uri}` (`--storage-uri`): first put this folder's contents there; {_upload(storage_uri)}.

| file | what it runs | model files |
| --- | --- | --- |
| `triton-inferenceservice.yaml` | KServe's Triton runtime (`kserve-tritonserver`) | `model-repository/` |
| `torchport-runtime.yaml` | a `ClusterServingRuntime` running `torchport serve`, and a service on it | `bundle/` |

```sh
kubectl apply -f triton-inferenceservice.yaml
kubectl get inferenceservice {service}               # READY True, then:
curl -s http://<ingress>/v2/models/{name}            # the v2 metadata, with the Host header KServe gives
```

The second needs the `torchport serve` image: build it from torchport's repository
(`docker build -f docker/serve.Dockerfile -t {image} .`), push it where the cluster pulls from, then
`kubectl apply -f torchport-runtime.yaml` (the service is `{service}-torchport`). It serves exactly what
`torchport serve bundle/` serves on one machine (the variants as versions and as `{name}.<variant>` models,
`/metrics`, the binary tensor extension); its readiness and liveness probes are the v2 health routes.

## Tensors

{tensor_table(manifest)}
"""


def mlflow_readme(manifest: Manifest, variant: str) -> str:
    name = manifest.name
    return f"""# {name}: an MLflow model

{_origin(manifest)}

An MLflow `python_function` model that runs the {variant} ONNX model (`data/model/model.onnx`) in ONNX Runtime. It
needs only `mlflow`, `onnxruntime` and `numpy`: the loader is `code/torchport_onnx_pyfunc.py`, in this folder,
not torchport. `MLmodel` carries the tensor signature and `input_example.json` a golden input.

```python
import mlflow
model = mlflow.pyfunc.load_model(".")                  # this folder
outputs = model.predict(images)                         # {{output name: array}}; images: float32, raw values
```

```sh
mlflow models serve -m . --env-manager local -p 5000     # REST scoring on /invocations
```

To register it: log the folder as a run's artifacts and register that; the registry then serves
`models:/{name}/<version>` (MLflow 3 wants a database tracking store, e.g. `sqlite:///mlflow.db`):

```python
mlflow.set_tracking_uri("sqlite:///mlflow.db")
with mlflow.start_run() as run:
    mlflow.log_artifacts(".", artifact_path="model")
mlflow.register_model(f"runs:/{{run.info.run_id}}/model", "{name}")
```

## Tensors

{tensor_table(manifest)}
"""


def onnx_test_data_readme(manifest: Manifest, sets: list[str], tolerance: tuple[float, float]) -> str:
    atol, rtol = tolerance
    return f"""# {manifest.name}: ONNX test data

{_origin(manifest)}

`model.onnx` and, beside it in ONNX's own test layout, {", ".join(f"`{s}/`" for s in sets)}: `input_<i>.pb` and
`output_<i>.pb` are serialized `onnx.TensorProto`s (named after the model's tensors), written from the bundle's
golden files: the inputs and the PyTorch reference's outputs for them. `test_data_set_0` is the whole golden
batch, `test_data_set_1` its first sample alone (the batch axis is dynamic). Any ONNX runtime's conformance tool
can check the model with no torchport installed:

```sh
onnx_test_runner -e cpu .                               # ONNX Runtime's test runner, on this folder
```

```python
import onnx, onnx.numpy_helper, onnxruntime
read = lambda p: onnx.numpy_helper.to_array(onnx.load_tensor(p))
session = onnxruntime.InferenceSession("model.onnx")
outputs = session.run(None, {{"{manifest.inputs[0].name}": read("test_data_set_0/input_0.pb")}})
```

Compare within the tolerance the bundle was verified with, `|got - expected| <= atol + rtol * |expected|` with
atol {atol:g} and rtol {rtol:g}: the reference is PyTorch, not ONNX Runtime, so bit-equality is not expected.

## Tensors

{tensor_table(manifest)}
"""
