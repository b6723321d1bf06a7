"""The v2 clients (C#, R, Java) against a real `torchport serve` on 127.0.0.1: golden parity over JSON and binary
tensors in conformance's table, each README followed from a copied bundle, and one line per HTTP error."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.runtimes.conftest import assert_out_matches_golden, error_line, follow_readme, require

from torchport.registry import CLIENTS
from torchport.runtimes.base import install_files
from torchport.runtimes.conformance import choose, run_conformance
from torchport.serve.local import local_server

NAMES = CLIENTS.names()
FOLDERS = {"csharp": "csharp", "r": "r", "java-v2": "java"}


def _bundle_copy(exported_digits: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(exported_digits / "bundle", bundle)
    return bundle


def _run_client(name: str, bundle: Path, url: str, out: Path) -> subprocess.CompletedProcess[str]:
    client = CLIENTS.get(name)
    folder = install_files(client, bundle)
    argv = client.command(bundle, folder, url, out)
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_client_passes_in_conformance_against_a_local_server(exported_digits: Path, tmp_path: Path) -> None:
    for client in map(CLIENTS.get, NAMES):
        require(client)
    bundle = _bundle_copy(exported_digits, tmp_path)
    chosen, explicit = choose("python," + ",".join(NAMES), server="local")
    results = run_conformance(bundle, chosen, explicit, save=False, server="local")
    assert [(r.runtime, r.status) for r in results] == [(n, "passed") for n in ["python", *NAMES]], [
        r.reason for r in results
    ]
    for result in results[1:]:
        assert result.artifact == "model.onnx" and result.engine.startswith("v2-")
        assert result.latency[0].batch == 1 and result.latency[0].median_ms > 0
        assert all(p.argmax_agreement == 1.0 for p in result.outputs.values())


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", NAMES)
def test_following_the_client_readme_reproduces_golden(name: str, exported_digits: Path, tmp_path: Path) -> None:
    """Copy the bundle elsewhere, start `torchport serve` on it, and type only what clients/<lang>/README.md says."""
    require(CLIENTS.get(name))
    bundle = _bundle_copy(exported_digits, tmp_path)
    with local_server([bundle], tmp_path / "serve.log", via_cli=True) as (_, port):
        proc = follow_readme(
            bundle, bundle / "clients" / FOLDERS[name] / "README.md", {"TORCHPORT_URL": f"http://127.0.0.1:{port}"}
        )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert_out_matches_golden(bundle, bundle / "out")
    log = (tmp_path / "serve.log").read_text()
    assert log.count('"path":"/v2/models/digits/infer"') >= 2  # JSON and binary, then the timed requests


def _rewrite(bundle: Path, change: dict[str, str]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    if "name" in change:
        manifest["name"] = change["name"]
    if "input" in change:  # the same new name in the declared inputs and the golden inputs: only the server minds
        manifest["inputs"][0]["name"] = change["input"]
        manifest["golden"]["inputs"][0]["name"] = change["input"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", NAMES)
def test_client_names_the_status_and_the_servers_message(name: str, exported_digits: Path, tmp_path: Path) -> None:
    require(CLIENTS.get(name))
    served = exported_digits / "bundle"
    cases = [
        ({"name": "nosuchmodel"}, (), "HTTP 404", "nosuchmodel"),
        ({"input": "pixels"}, (), "HTTP 400", "pixels"),
        ({}, ("--api-key", "s3cret"), "HTTP 401", ""),
        ({}, ("--max-queue", "0"), "HTTP 503", ""),
    ]
    for index, (change, server_args, status, named) in enumerate(cases):
        bundle = tmp_path / f"case{index}" / "bundle"
        shutil.copytree(served, bundle)
        _rewrite(bundle, change)
        with local_server([served], tmp_path / f"serve{index}.log", *server_args) as (_, port):
            proc = _run_client(name, bundle, f"http://127.0.0.1:{port}", tmp_path / f"out{index}")
        line = error_line(proc)
        assert status in line and named in line, line
        assert not (tmp_path / f"out{index}" / "result.json").exists()
    proc = _run_client(name, served, "http://127.0.0.1:9", tmp_path / "unreachable")  # nothing listens on port 9
    assert "cannot reach http://127.0.0.1:9" in error_line(proc)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_client_refuses_a_tampered_golden_file_and_an_escaping_path(
    name: str, exported_digits: Path, tmp_path: Path
) -> None:
    require(CLIENTS.get(name))
    bundle = _bundle_copy(exported_digits, tmp_path)
    with open(bundle / "golden" / "input.bin", "ab") as handle:
        handle.write(b"\0")
    proc = _run_client(name, bundle, "http://127.0.0.1:9", tmp_path / "out")  # refused before any request
    assert proc.returncode == 2 and "'golden/input.bin' fails its checksum" in error_line(proc)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["golden"]["inputs"][0]["path"] = "../golden/input.bin"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = _run_client(name, bundle, "http://127.0.0.1:9", tmp_path / "out2")
    assert proc.returncode == 2 and "'../golden/input.bin' is absolute or contains '..'" in error_line(proc)
