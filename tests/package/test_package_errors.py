"""Refusals of `package_bundle` (the `torchport package` verb): one line that names the tensor, option or folder
at fault, a UsageError or ConfigError (exit 2), and nothing left behind or overwritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from torchport.bundle.manifest import TensorSpec
from torchport.errors import BundleError, ConfigError, UsageError
from torchport.package import TARGETS, package_bundle


def tampered(bundle: Path, tmp_path: Path, **changes: object) -> Path:
    """A private copy of the bundle whose manifest's first input has ``changes``."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy, symlinks=False)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["inputs"][0].update(changes)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_the_targets_are_the_four_engines() -> None:
    assert TARGETS.names() == ["triton", "kserve", "mlflow", "onnx-test-data"]


def test_an_unknown_target_is_refused_with_a_suggestion(digits_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--to: unknown package target 'trition'; did you mean 'triton'\?"):
        package_bundle(digits_bundle, "trition", tmp_path / "out")


def test_a_non_empty_out_is_refused_unless_forced(digits_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"--out .*repo: exists and is not empty; pass --force to replace it$"):
        package_bundle(digits_bundle, "triton", out)
    assert (out / "keep.txt").read_text() == "mine"
    package_bundle(digits_bundle, "triton", out, force=True)
    assert not (out / "keep.txt").exists()
    assert (out / "digits" / "config.pbtxt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no staging or old folder left beside it


def test_an_empty_out_is_used(digits_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    assert (package_bundle(digits_bundle, "triton", tmp_path / "repo") / "digits" / "1" / "model.onnx").is_file()


def test_a_refusal_leaves_the_old_out_as_it_was(digits_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"^--variant fp16: the bundle has no ONNX variant 'fp16' \(it has: int8\)"):
        package_bundle(digits_bundle, "triton", out, force=True, variant="fp16")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_the_bundle_itself_is_never_the_out(digits_bundle: Path) -> None:
    with pytest.raises(UsageError, match=r"holds the bundle itself"):
        package_bundle(digits_bundle, "triton", digits_bundle.parent, force=True)
    with pytest.raises(UsageError, match=r"holds the bundle itself"):
        package_bundle(digits_bundle, "triton", digits_bundle / "runners", force=True)  # inside it: never replaced
    assert (digits_bundle / "manifest.json").is_file()


def test_a_leading_dim_that_is_not_batch_is_refused_with_batching(digits_bundle: Path, tmp_path: Path) -> None:
    bundle = tampered(digits_bundle, tmp_path, shape=[5, 1, 8, 8])  # narrower than the graph's symbolic batch
    with pytest.raises(UsageError, match=r"""^input 'input': Triton batching needs "batch" as the first axis only"""):
        package_bundle(bundle, "triton", tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    out = package_bundle(bundle, "triton", tmp_path / "repo", max_batch_size=0)  # what the message suggests
    assert "dims: [ 5, 1, 8, 8 ]" in (out / "digits" / "config.pbtxt").read_text()


def test_a_dtype_without_a_triton_type_is_refused_naming_the_tensor() -> None:
    """Every manifest dtype has a Triton type today (test_triton); a future one without is refused, not guessed."""
    from torchport.package.triton import triton_type

    spec = TensorSpec.model_construct(name="pixels", dtype="complex64", shape=["batch", 4])
    with pytest.raises(UsageError, match=r"^input 'pixels': dtype complex64 has no Triton data type"):
        triton_type("input", spec)


def test_a_manifest_dtype_outside_the_format_is_refused_where_it_is_read(digits_bundle: Path, tmp_path: Path) -> None:
    bundle = tampered(digits_bundle, tmp_path, dtype="bfloat16")
    with pytest.raises(BundleError, match=r"manifest.json: inputs\.0\.dtype: "):
        package_bundle(bundle, "triton", tmp_path / "repo")


def test_a_negative_max_batch_size_is_refused(digits_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--max-batch-size must be 0 \(no batching\) or more \(got -1\)$"):
        package_bundle(digits_bundle, "triton", tmp_path / "repo", max_batch_size=-1)


def test_a_folder_that_is_no_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"is not a bundle: manifest.json not found$"):
        package_bundle(tmp_path, "onnx-test-data", tmp_path / "out")


def test_variant_as_version_needs_a_variant(digits_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--variant-as-version needs --variant NAME"):
        package_bundle(digits_bundle, "triton", tmp_path / "repo", variant_as_version=True)


def test_an_out_that_is_a_file_is_refused(digits_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "repo").write_text("mine")
    with pytest.raises(UsageError, match=r"--out .*repo: exists and is not a folder$"):
        package_bundle(digits_bundle, "triton", tmp_path / "repo", force=True)
    assert (tmp_path / "repo").read_text() == "mine"
