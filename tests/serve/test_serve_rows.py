"""A tabular bundle served: raw CSV columns in (REST JSON, REST binary, gRPC typed contents), training's own answer
out; a category never seen in training is a 400 / INVALID_ARGUMENT naming the column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
from serve_helpers import error_of, http, server_process

from torchport.config import load_config
from torchport.data.sources import read_source
from torchport.predict import Bundle
from torchport.serve.local import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROWS = 4


def _rows() -> pd.DataFrame:
    return pd.read_csv(EXAMPLES / "data" / "houses.csv").iloc[:ROWS]


def _json_inputs(rows: pd.DataFrame) -> list[dict[str, object]]:
    kinds = {"neighbourhood": "BYTES", "bedrooms": "INT64", "age_years": "INT64"}
    return [
        {"name": name, "datatype": kinds.get(name, "FP64"), "shape": [len(rows)], "data": rows[name].tolist()}
        for name in rows.columns
        if name != "price_k"
    ]


@pytest.fixture(scope="module")
def expected(exported_houses: Path) -> dict[str, np.ndarray]:
    """ONNX Runtime on training's own encoding of the same rows."""
    encoded = read_source(load_config(EXAMPLES / "tabular_csv.yaml").data).x[:ROWS]
    return Bundle.open(exported_houses / "bundle").predict(encoded)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_raw_columns_over_rest_and_grpc_answer_as_training(
    exported_houses: Path, expected: dict[str, np.ndarray], tmp_path: Path
) -> None:
    rows = _rows()
    name = Bundle.open(exported_houses / "bundle").name
    grpc_port = free_port()
    with server_process([exported_houses / "bundle"], tmp_path / "serve.log", "--grpc-port", str(grpc_port)) as (
        _,
        port,
    ):
        status, _, body = http(
            port, "POST", f"/v2/models/{name}/infer", json.dumps({"inputs": _json_inputs(rows)}).encode()
        )
        assert status == 200, body
        outputs = {
            o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in json.loads(body)["outputs"]
        }
        for key, want in expected.items():
            np.testing.assert_allclose(outputs[key], want, rtol=1e-6)

        strange = _json_inputs(rows.assign(neighbourhood="atlantis"))
        status, _, body = http(port, "POST", f"/v2/models/{name}/infer", json.dumps({"inputs": strange}).encode())
        assert status == 400 and "column 'neighbourhood': value 'atlantis' was not seen in training" in error_of(body)

        status, _, body = http(port, "GET", f"/v2/models/{name}")
        assert [c["name"] for c in json.loads(body)["parameters"]["raw_columns"]] == [
            c for c in rows.columns if c != "price_k"
        ]

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        inputs = []
        for column in _json_inputs(rows):
            tensor = grpcclient.InferInput(str(column["name"]), [ROWS], str(column["datatype"]))
            values = np.asarray(column["data"], dtype=object if column["datatype"] == "BYTES" else None)
            if column["datatype"] == "FP64":
                values = values.astype(np.float64)
            elif column["datatype"] == "INT64":
                values = values.astype(np.int64)
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
        result = client.infer(name, inputs)
        for key, want in expected.items():
            np.testing.assert_allclose(result.as_numpy(key), want, rtol=1e-6)
