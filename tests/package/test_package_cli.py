"""`torchport package` on the command line: it writes the target, and refuses a busy --out or an unknown target
with one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from torchport.cli import main


def test_package_writes_onnx_test_data(digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "onnx"
    assert main(["package", str(digits_bundle), "--to", "onnx-test-data", "--out", str(out)]) == 0
    assert f"in {out}" in capsys.readouterr().out
    onnx.checker.check_model(str(out / "model.onnx"))
    assert (out / "test_data_set_0" / "input_0.pb").is_file() and (out / "README.md").is_file()


def test_package_refuses_a_busy_out_and_an_unknown_target(
    digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["package", str(digits_bundle), "--to", "triton", "--out", str(busy)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--force" in lines[0]
    assert (busy / "keep.txt").read_text() == "mine"

    assert main(["package", str(digits_bundle), "--to", "trition", "--out", str(tmp_path / "t")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'triton'" in lines[0]
