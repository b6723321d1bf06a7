"""The manifest is checked, not trusted: against the ONNX graph, for paths that leave the bundle or run dir, for a
linked manifest.json, and `inspect` recomputes checksums instead of repeating a stored verdict."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from torchport.bundle.graph import check_graph
from torchport.bundle.inspect import print_bundle
from torchport.bundle.manifest import read_bundle
from torchport.errors import BundleError
from torchport.serve.models import load_repository
from torchport.verify.bundle import verify_bundle

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def _edit(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _set(*keys: str | int, value: object) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        target: Any = manifest
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("inputs", 0, "shape", value=["batch", 1, 100000, 100000]), r"input 'input': dim 2 is 100000 .* 8"),
        (_set("inputs", 0, "shape", value=["batch", 64]), r"input 'input': rank 2 .* 4"),
        (_set("inputs", 0, "dtype", value="int64"), r"input 'input': dtype int64 .* float32"),
        (_set("inputs", 0, "name", value="pixels"), r"input 'pixels' .* not in model.onnx"),
        (_set("outputs", 1, "shape", value=["batch", 11]), r"output 'probabilities': dim 1 is 11 .* 10"),
    ],
)
def test_manifest_tensors_are_checked_against_the_graph(
    digits_run: Path, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    """Finding 7a: a manifest that lies about the graph's tensors is refused with one line naming the tensor."""
    bundle = digits_run / "bundle"
    check_graph(read_bundle(bundle))  # the real manifest agrees with its graph
    _edit(bundle, change)
    with pytest.raises(BundleError, match=expected) as caught:
        check_graph(read_bundle(bundle))
    assert "\n" not in str(caught.value)


def test_a_lying_shape_stops_verify_serve_and_inspect_before_allocating(digits_run: Path, cli: CliRunner) -> None:
    """Finding 7a: every reader runs the shared check first (serve used to die allocating the warm-up batch)."""
    bundle = digits_run / "bundle"
    _edit(bundle, _set("inputs", 0, "shape", value=["batch", 1, 8, 9]))
    with pytest.raises(BundleError, match="dim 3 is 9"):
        load_repository([bundle], threads=1)
    with pytest.raises(BundleError, match="dim 3 is 9"):
        print_bundle(bundle, Console(quiet=True))
    with pytest.raises(BundleError, match="dim 3 is 9"):
        verify_bundle(bundle)
    _edit(bundle, _set("inputs", 0, "shape", value=["batch", 1, 100000, 100000]))
    result = cli("verify", str(bundle))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "input 'input': dim 2 is 100000" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("checkpoint", ["../../../x", "/etc/passwd", "sub/../../x", "~/x"])
def test_provenance_checkpoint_stays_in_the_run_dir(digits_run: Path, checkpoint: str, cli: CliRunner) -> None:
    """Finding 7b: verify loads the checkpoint the manifest names; it must not be one outside the run dir."""
    bundle = digits_run / "bundle"
    _edit(bundle, _set("provenance", "checkpoint", value=checkpoint))
    with pytest.raises(BundleError, match=r"provenance\.checkpoint .*refusing it"):
        read_bundle(bundle)
    if checkpoint == "../../../x":
        result = cli("verify", str(bundle))
        assert result.returncode == 2 and "provenance.checkpoint" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "change",
    [
        _set("variants", value=[{"variant": "int8", "path": "../x.onnx", "status": "refused", "reason": "r"}]),
        _set("artifacts", 0, "derived_from", value="/etc/passwd"),
    ],
)
def test_every_manifest_path_stays_in_the_bundle(digits_run: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Finding 7b: not only artifacts and golden tensors: every path the manifest holds."""
    _edit(digits_run / "bundle", change)
    with pytest.raises(BundleError, match="refusing it"):
        read_bundle(digits_run / "bundle")


def test_a_linked_manifest_is_refused(digits_run: Path, tmp_path: Path) -> None:
    """Finding 7c: manifest.json itself may not be a link (it could lead anywhere, and `save` would write there)."""
    manifest = digits_run / "bundle" / "manifest.json"
    elsewhere = tmp_path / "elsewhere.json"
    manifest.rename(elsewhere)
    manifest.symlink_to(elsewhere)
    with pytest.raises(BundleError, match=r"manifest\.json is a link"):
        read_bundle(digits_run / "bundle")


def test_inspect_verifies_checksums_and_distrusts_stored_verdicts(digits_run: Path, cli: CliRunner) -> None:
    """Finding 7d: inspect recomputes every checksum, says so, and does not repeat "pass" for a changed file."""
    bundle = digits_run / "bundle"
    stored = {
        "artifact": "model.onnx",
        "runtime": "onnxruntime",
        "reference": "pytorch",
        "atol": 1e-5,
        "rtol": 1e-4,
        "passed": True,
        "checks": [],
        "seconds": 0.1,
    }
    _edit(bundle, _set("verification", value=[stored]))
    intact = cli("inspect", str(bundle))
    assert intact.returncode == 0, intact.stderr
    assert "checksums: all" in intact.stdout and "match the manifest" in intact.stdout
    assert "pass" in intact.stdout

    onnx_file = bundle / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    tampered = cli("inspect", str(bundle))
    assert tampered.returncode == 2
    assert "pass" not in tampered.stdout
    assert "model.onnx' fails its checksum" in tampered.stderr and "Traceback" not in tampered.stderr
    assert "checksums: 1 of" in tampered.stdout


@pytest.mark.parametrize("name", ["../escape", "/tmp/evil", "..", "a/b"])
def test_a_model_name_that_is_not_a_plain_file_name_is_refused(digits_run: Path, name: str) -> None:
    """Servers, runners and `torchport package` make folders and URLs of the name: it must not climb out."""
    _edit(digits_run / "bundle", _set("name", value=name))
    with pytest.raises(BundleError, match=r"name"):
        read_bundle(digits_run / "bundle")
