"""Every shipped example config validates, trains, exports and passes verification.

The fast tests check that each ``examples/*.yaml`` loads and builds against its data. The slow ones run the
whole pipeline per example in a temporary run directory and print the worst parity error of each artifact, so a
run with ``-m slow`` doubles as the table of max errors per example. AOTInductor compiles take 15-30 s each
on two cores, so only two examples build ``model.pt2``; the rest export ONNX only.
"""

from __future__ import annotations

import difflib
import runpy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from torchport.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))


@dataclass(frozen=True)
class Expectation:
    """How one example is run by the slow test, and what it must reach."""

    epochs: int | None = None  # None: the shipped number of epochs
    aoti: bool = False
    min_accuracy: float | None = None
    max_rmse: float | None = None


EXPECTATIONS = {
    "digits": Expectation(aoti=True, min_accuracy=0.95),  # the acceptance bar, with the shipped epochs
    "digits_pool": Expectation(epochs=6, min_accuracy=0.9),
    "custom_block": Expectation(epochs=6, min_accuracy=0.9),
    "digits_lstm": Expectation(min_accuracy=0.9),
    "digits_gru": Expectation(min_accuracy=0.9),
    "digits_transformer": Expectation(aoti=True, min_accuracy=0.9),
    "iris_mlp": Expectation(min_accuracy=0.9),
    "wine_mlp": Expectation(min_accuracy=0.9),
    "tabular_csv": Expectation(max_rmse=30.0),  # prices of 100-600 (thousands) with noise of sd 15
    "images_resnet": Expectation(min_accuracy=0.9),  # resnet18 from scratch, 8 short epochs, 240 drawn shapes
}


def quiet_console() -> Console:
    return Console(quiet=True)


@pytest.fixture
def torch_globals() -> Iterator[None]:
    """Training sets process-wide torch state (threads, deterministic algorithms); put it back afterwards."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_every_example_has_an_expectation() -> None:
    assert {path.stem for path in CONFIGS} == set(EXPECTATIONS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_example_validates_and_builds(path: Path) -> None:
    from torchport.pipeline import dry_build

    config = load_config(path)
    assert config.name == path.stem
    assert "parameters" in dry_build(config)
    header = path.read_text().splitlines()[0]
    assert header.startswith("# ") and len(header) > 20, f"{path.name}: start with a comment saying what it shows"


def _layer_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    start = lines.index("  layers:") + 1
    return [line for line in lines[start:] if line.startswith("    - ")]


def test_digits_pool_is_digits_plus_one_layer_line() -> None:
    digits, pooled = _layer_lines(EXAMPLES / "digits.yaml"), _layer_lines(EXAMPLES / "digits_pool.yaml")
    changes = [line for line in difflib.ndiff(digits, pooled) if line[:2] in ("- ", "+ ")]
    assert len(changes) == 1 and changes[0].startswith("+ ") and "pool" in changes[0], changes
    assert _sections_besides_model(EXAMPLES / "digits.yaml") == _sections_besides_model(EXAMPLES / "digits_pool.yaml")


def _sections_besides_model(path: Path) -> dict[str, object]:
    return {key: value for key, value in yaml.safe_load(path.read_text()).items() if key not in ("name", "model")}


def test_houses_csv_is_what_its_script_writes() -> None:
    script = runpy.run_path(str(EXAMPLES / "data" / "make_houses.py"))
    rows = script["make_rows"]()
    csv_path = EXAMPLES / "data" / "houses.csv"
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ",".join(rows[0])
    assert lines[1:] == [",".join(str(value) for value in row.values()) for row in rows]
    assert len(rows) <= 300 and csv_path.stat().st_size < 30_000


def test_shapes_folder_is_what_its_script_draws() -> None:
    import numpy as np
    from PIL import Image

    script = runpy.run_path(str(EXAMPLES / "data" / "make_shapes.py"))
    root = EXAMPLES / "data" / "shapes"
    drawn = script["make_images"]()
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(drawn)
    for shape, images in drawn.items():
        files = sorted((root / shape).glob("*.png"))
        assert len(files) == len(images)
        for path, image in zip(files, images, strict=True):
            with Image.open(path) as stored:
                assert np.array_equal(np.asarray(stored.convert("RGB")), np.asarray(image)), path


# --- the whole pipeline per example --------------------------------------------------------------------------


# Non-strict torch.export swaps parameters for fake tensors, so nn.LSTM/GRU re-set `_flat_weights` in forward;
# export restores the module's __dict__ afterwards and only warns (pytorch/pytorch#163809): harmless here.
@pytest.mark.filterwarnings("ignore:The tensor attributes .*_flat_weights.* were assigned during export")
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_example_trains_exports_and_verifies(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], torch_globals: None
) -> None:
    from torchport.export.aoti import find_cxx
    from torchport.pipeline import export_stage
    from torchport.train.loop import train
    from torchport.verify.bundle import verify_bundle

    expected = EXPECTATIONS[path.stem]
    build_pt2 = expected.aoti and find_cxx() is not None
    # One thread: these models are too small to gain from two, and on a busy two-core machine two threads
    # spin against each other (10x slower training measured).
    overrides = [f"export.aoti={str(build_pt2).lower()}", "train.threads=1"]
    if expected.epochs is not None:
        overrides.append(f"train.epochs={expected.epochs}")
    config = load_config(path, overrides)
    run_dir = tmp_path / "run"

    started = time.perf_counter()
    train(config, run_dir, console=quiet_console())
    trained = time.perf_counter()
    bundle = export_stage(run_dir, quiet_console())
    exported = time.perf_counter()
    _, results = verify_bundle(run_dir / "bundle")

    worst = {
        result.artifact: max(o.max_abs for check in result.checks for o in check.outputs.values()) for result in results
    }
    metrics = bundle.manifest.metrics
    with capsys.disabled():
        errors = ", ".join(f"{name} max abs {error:.2e}" for name, error in worst.items())
        scores = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items() if value is not None)
        verified = time.perf_counter()
        print(
            f"\n[{path.stem}] {scores}; {errors}; train {trained - started:.1f} s, "
            f"export {exported - trained:.1f} s, verify {verified - exported:.1f} s"
        )

    failed = [
        f"{r.artifact} ({r.runtime}): first diverging layer {r.first_diverging_layer}" for r in results if not r.passed
    ]
    assert not failed, failed
    assert set(worst) >= ({"model.onnx", "model.pt2"} if build_pt2 else {"model.onnx"}), worst
    if expected.min_accuracy is not None:
        assert metrics["val_accuracy"] is not None and metrics["val_accuracy"] >= expected.min_accuracy, metrics
    if expected.max_rmse is not None:
        assert metrics["val_rmse"] is not None and metrics["val_rmse"] <= expected.max_rmse, metrics
