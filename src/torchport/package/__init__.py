"""``torchport package``: hand a bundle to the engines that scale serving out.

One machine is ``torchport serve``; beyond it the bundle goes to an engine built for fleets, never to a cluster of
our own: a Triton model repository, KServe InferenceServices (on Triton, or on ``torchport serve`` as a custom
runtime), an MLflow model, or ONNX test data for any vendor's conformance tool. Each output is derived from the
manifest alone, copies only files whose checksum matches it, and carries a README that says how to deploy it.

Importing this package is cheap (the targets load on use), so the CLI can list :data:`TARGETS` for ``--help``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from torchport.errors import UsageError
from torchport.registry import Registry

#: ``--to`` name -> ``write(bundle, out, options)``, which fills the empty folder ``out``
TARGETS: Registry[Callable[..., None]] = Registry(
    "package target",
    lazy={
        "triton": "torchport.package.triton:write_triton",
        "kserve": "torchport.package.kserve:write_kserve",
        "mlflow": "torchport.package.mlflow_model:write_mlflow",
        "onnx-test-data": "torchport.package.onnx_test_data:write_test_data",
    },
)


def package_bundle(
    bundle_dir: Path,
    to: str,
    out: Path,
    *,
    force: bool = False,
    variant: str | None = None,
    variant_as_version: bool = False,
    max_batch_size: int | None = None,
    storage_uri: str | None = None,
    image: str | None = None,
) -> Path:
    """Write the hand-off folder for target ``to`` at ``out``; returns ``out``.

    The folder is written beside ``out`` and swapped in only once complete, so a refusal or a failure leaves an
    existing ``out`` as it was; an existing non-empty ``out`` is replaced only with ``force``.
    """
    from torchport.bundle.graph import check_graph
    from torchport.bundle.manifest import read_bundle
    from torchport.package.common import PackageOptions

    write = TARGETS.get(to, where="--to")
    if variant_as_version and variant is None:
        raise UsageError("--variant-as-version needs --variant NAME (the variant to serve as version 2)")
    bundle_dir, out = Path(bundle_dir), Path(out)
    _check_out(bundle_dir, out, force)
    bundle = read_bundle(bundle_dir)
    check_graph(bundle)  # a manifest that disagrees with its graph would hand over a config the engine refuses
    options = PackageOptions(variant, variant_as_version, max_batch_size, storage_uri, image)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{os.getpid()}.partial")  # mkdir, not mkdtemp: the umask's mode, not 0700
    shutil.rmtree(staging, ignore_errors=True)  # a crashed run's, under a reused pid
    staging.mkdir()
    try:
        write(bundle, staging, options)
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_out(bundle_dir: Path, out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out}: exists and is not empty; pass --force to replace it")
    bundle, target = bundle_dir.resolve(), out.resolve()
    inside = bundle in target.parents and (bundle / "manifest.json").is_file()  # a bundle's own folders stay its
    if target == bundle or target in bundle.parents or inside:
        raise UsageError(f"--out {out}: holds the bundle itself; choose a folder outside it")


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` with the finished ``staging`` folder: the old one is removed only after the rename."""
    old: Path | None = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
