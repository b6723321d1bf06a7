"""Bad configs through the real CLI: exit code 2, one line on stderr naming the key path, never a traceback.

Each case is a separate ``python -m torchport.cli validate`` process. They are started together by one
module-scoped fixture (a process spends most of its two seconds importing torch), and each test reads its result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # subprocesses

GOOD_LAYERS = """\
model:
  layers:
    - conv2d: {out_channels: 4, kernel_size: 3, padding: 1}
    - relu
    - conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
    - relu
    - flatten
    - linear: {out_features: classes}
"""


@dataclass(frozen=True)
class Case:
    id: str
    config: str  # the file's text
    expected: list[str]  # substrings of the one line after "error: "; the first is its start
    overrides: list[str] = field(default_factory=list)
    exit_code: int = 2


CASES = [
    Case(
        "unknown-top-level-key",
        GOOD_LAYERS.replace("model:", "modle:"),
        ["modle: unknown key; did you mean 'model'?", "expected one of: bench, data, export"],
    ),
    Case(
        "unknown-nested-key",
        GOOD_LAYERS + "train: {epohcs: 3}\n",
        ["train.epohcs: unknown key; did you mean 'epochs'?", "expected one of:", "epochs"],
    ),
    Case("wrong-type", GOOD_LAYERS + "train: {epochs: many}\n", ["train.epochs: ", "valid integer", "'many'"]),
    Case("negative-value", GOOD_LAYERS + "train: {epochs: -1}\n", ["train.epochs: ", "greater than or equal to 1"]),
    Case(
        "unknown-block",
        GOOD_LAYERS.replace("    - flatten", "    - maxpool: {kernel_size: 2}\n    - flatten"),
        ["model.layers[4]: unknown block 'maxpool'; did you mean 'maxpool2d'?", "torchport blocks"],
    ),
    Case(
        "bad-block-argument-name",
        GOOD_LAYERS.replace("kernel_size: 3, padding: 1}\n    - relu\n    - flatten", "kernal_size: 3}\n    - flatten"),
        ["model.layers[2].conv2d.kernal_size: unknown argument; did you mean 'kernel_size'?"],
    ),
    Case(
        "bad-block-argument-type",
        GOOD_LAYERS.replace("out_channels: 8, kernel_size: 3", "out_channels: 8, kernel_size: abc"),
        ["model.layers[2].conv2d.kernel_size: expected int or tuple[int, int] (got 'abc')"],
    ),
    Case(
        "missing-csv-file",
        GOOD_LAYERS + "data: {source: csv, path: missing.csv, target: label}\n",
        ["data.path: file not found: ", "missing.csv"],
    ),
    Case(
        "unknown-optimizer",
        GOOD_LAYERS + "train: {optimizer: {name: Adamm}}\n",
        ["train.optimizer.name: unknown optimizer 'Adamm'; did you mean 'Adam'?"],
    ),
    Case(
        "bad-optimizer-argument",
        GOOD_LAYERS + "train: {optimizer: {name: Adam, lrr: 0.1}}\n",
        ["train.optimizer.lrr: not an argument of Adam; did you mean 'lr'?"],
    ),
    Case("invalid-yaml", "model: [a\n", ["cfg.yaml: invalid YAML at line 2, column 1"]),
    Case("non-mapping-top-level", "- relu\n- flatten\n", ["cfg.yaml: expected a mapping of sections"]),
    Case(
        "override-without-value",
        GOOD_LAYERS,
        ["override 'train.epochs': expected key.path=value"],
        overrides=["train.epochs"],
    ),
    Case(
        "override-bad-value",
        GOOD_LAYERS,
        ["train.epochs: ", "valid integer", "'abc'"],
        overrides=["train.epochs=abc"],
    ),
    Case(
        "override-fixes-the-config",
        GOOD_LAYERS + "train: {epochs: 0}\n",
        [],
        overrides=["train.epochs=2", "model.layers[0].conv2d.out_channels=8"],
        exit_code=0,
    ),
]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(args: list[str], cwd: Path) -> Result:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}  # as a user runs it
    done = subprocess.run(
        [sys.executable, "-m", "torchport.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every case's process, run concurrently; the digits example rides along as the known-good config."""
    jobs: dict[str, tuple[list[str], Path]] = {"examples/digits.yaml": (["validate", "examples/digits.yaml"], ROOT)}
    for case in CASES:
        folder = tmp_path_factory.mktemp(case.id)
        (folder / "cfg.yaml").write_text(case.config)
        jobs[case.id] = (["validate", "cfg.yaml", *case.overrides], folder)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(run_cli, args, cwd) for name, (args, cwd) in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", [c for c in CASES if c.exit_code == 2], ids=lambda c: c.id)
def test_bad_config_exits_2_with_one_line(case: Case, results: dict[str, Result]) -> None:
    result = results[case.id]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("error: " + case.expected[0]), line
    for fragment in case.expected[1:]:
        assert fragment in line, line


def test_distinct_bad_configs_are_many(results: dict[str, Result]) -> None:
    """What the CLI printed, not what the table expects: at least ten different one-line errors with exit 2."""
    first_lines = {results[case.id].stderr.strip() for case in CASES if case.exit_code == 2}
    assert len(first_lines) >= 10, first_lines


def test_an_override_can_fix_a_config(results: dict[str, Result]) -> None:
    result = results["override-fixes-the-config"]
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


def test_the_digits_example_validates(results: dict[str, Result]) -> None:
    result = results["examples/digits.yaml"]
    assert result.returncode == 0, result.stderr
    assert "config 'digits' is valid" in result.stdout
    assert "(1, 8, 8) -> (10,)" in result.stdout


def test_debug_adds_the_traceback_and_keeps_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The one exception to the one-line rule: with --debug the traceback comes first (for developers). The exit
    code stays, so a script, or torchrun's agent that stops on a worker's 2, reads a run with --debug alike."""
    from torchport.cli import main

    (tmp_path / "cfg.yaml").write_text(GOOD_LAYERS + "train: {epochs: many}\n")
    assert main(["validate", str(tmp_path / "cfg.yaml")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "validate", str(tmp_path / "cfg.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError: train.epochs: " in err
    assert err.strip().splitlines()[-1].startswith("error: train.epochs: ")


# --- errors that once escaped as "internal error" (issue 14, finding 6) ----------------------------------------


def _one_line_exit_2(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "internal error" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_non_utf8_config_is_one_line(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "cfg.yaml"
    config.write_bytes(GOOD_LAYERS.encode() + b"name: caf\xe9\n")
    _one_line_exit_2(cli("validate", str(config)), "cfg.yaml", "UTF-8")


@pytest.mark.parametrize("verb", ["verify", "inspect", "serve"])
def test_non_utf8_manifest_is_one_line(digits_run: Path, cli, verb: str) -> None:  # type: ignore[no-untyped-def]
    manifest = digits_run / "bundle" / "manifest.json"
    manifest.write_bytes(b'{"format": "\xff\xfe"}\n')
    extra = ["--port", "0"] if verb == "serve" else []
    _one_line_exit_2(cli(verb, str(digits_run / "bundle"), *extra), "manifest.json", "UTF-8")


def test_garbage_onnx_with_a_recomputed_checksum_is_one_line(digits_run: Path, cli) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import json

    bundle = digits_run / "bundle"
    garbage = b"this is not a protobuf" * 10
    (bundle / "model.onnx").write_bytes(garbage)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        if artifact["path"] == "model.onnx":
            artifact["sha256"], artifact["bytes"] = hashlib.sha256(garbage).hexdigest(), len(garbage)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _one_line_exit_2(cli("verify", str(bundle)), "model.onnx")


def test_a_plugin_that_exits_is_one_line_naming_it(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    config = tmp_path / "cfg.yaml"
    config.write_text(GOOD_LAYERS + "plugins: [quitter]\n")
    _one_line_exit_2(cli("validate", str(config)), "plugins[0]", "quitter")


def test_an_unexpected_error_exits_3_not_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """1 means "a check failed"; a bug of ours is neither that nor the user's mistake."""
    from torchport import cli
    from torchport.bundle import manifest

    def boom() -> dict[str, object]:
        raise RuntimeError("something we did not expect")

    monkeypatch.setattr(manifest, "manifest_json_schema", boom)  # a bug inside the stage the verb calls
    assert cli.main(["schema", "manifest"]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: RuntimeError: something we did not expect")
