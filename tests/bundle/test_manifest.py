"""The bundle contract: published schema, checksums, and paths that never leave the bundle."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from torchport.bundle.manifest import manifest_json_schema, read_bundle, safe_path
from torchport.errors import BundleError

ROOT = Path(__file__).resolve().parents[2]

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def test_published_schema_is_current() -> None:
    published = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    assert published == manifest_json_schema(), (
        "regenerate with: torchport schema manifest > schemas/manifest.schema.json"
    )


def test_manifest_validates_against_published_schema(digits_run: Path) -> None:
    manifest = json.loads((digits_run / "bundle" / "manifest.json").read_text())
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    jsonschema.validate(manifest, schema)
    assert manifest["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert {a["kind"] for a in manifest["artifacts"]} == {"onnx"}
    assert manifest["provenance"]["torch"].startswith("2.")
    runners = digits_run / "bundle" / "runners"
    for runtime, entry in [("python", "python_ort.py"), ("node", "runner.mjs"), ("cpp", "runner.cpp")]:
        assert (runners / runtime / entry).is_file() and (runners / runtime / "README.md").is_file()


def test_golden_tensors_are_raw_little_endian(digits_run: Path) -> None:
    """A reader in any language needs only the manifest: dtype, shape and raw bytes."""
    manifest = json.loads((digits_run / "bundle" / "manifest.json").read_text())
    golden = manifest["golden"]["inputs"][0]
    raw = (digits_run / "bundle" / golden["path"]).read_bytes()
    values = np.frombuffer(raw, dtype="<f4").reshape(golden["shape"])
    assert values.shape == (8, 1, 8, 8) and values.min() >= 0 and values.max() <= 16


def test_tampered_file_fails_its_checksum(digits_run: Path, cli: CliRunner) -> None:
    onnx_file = digits_run / "bundle" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    result = cli("verify", str(digits_run / "bundle"))
    assert result.returncode == 2
    assert "model.onnx' fails its checksum" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bad_path", ["../outside.onnx", "/etc/passwd", "golden/../../x.bin", "~/x"])
def test_paths_leaving_the_bundle_are_refused(digits_run: Path, bad_path: str, cli: CliRunner) -> None:
    manifest_path = digits_run / "bundle" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["path"] = bad_path
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="refusing it"):
        read_bundle(digits_run / "bundle")
    result = cli("inspect", str(digits_run / "bundle"))
    assert result.returncode == 2 and "refusing it" in result.stderr


def test_links_inside_the_bundle_are_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "model.onnx").symlink_to(tmp_path / "secret")
    with pytest.raises(BundleError, match="link"):
        safe_path(tmp_path / "bundle", "model.onnx")


def test_inspect_prints_a_summary(digits_run: Path, cli: CliRunner) -> None:
    result = cli("inspect", str(digits_run / "bundle"))
    assert result.returncode == 0, result.stderr
    for expected in ("digits", "model.onnx", "['batch', 1, 8, 8]", "probabilities", "val_accuracy"):
        assert expected in result.stdout


def test_not_a_bundle_is_a_usage_error(tmp_path: Path, cli: CliRunner) -> None:
    result = cli("verify", str(tmp_path))
    assert result.returncode == 2 and "manifest.json not found" in result.stderr


def test_table_columns_are_optional_and_checked(digits_run: Path) -> None:
    """Bundles written before ``preprocessing.columns`` existed still read (no table); a bad entry is one line."""
    manifest_path = digits_run / "bundle" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # digits takes images, not table rows: written without the key, as before it existed (older readers refuse it)
    assert "columns" not in manifest["preprocessing"]
    assert read_bundle(digits_run / "bundle").manifest.preprocessing.columns == []
    manifest["preprocessing"]["columns"] = [{"name": "colour", "kind": "ordinal", "categories": ["red"]}]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=r"preprocessing\.columns\.0\.kind: Input should be 'numeric' or 'categorical'"
    ):
        read_bundle(digits_run / "bundle")


def test_a_tables_bundle_writes_its_columns(exported_houses: Path) -> None:
    houses = json.loads((exported_houses / "bundle" / "manifest.json").read_text())
    assert [column["name"] for column in houses["preprocessing"]["columns"]][-1] == "neighbourhood"
