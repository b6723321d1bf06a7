"""What every verb shares: ``--version``, ``--debug`` before or after the verb, the exit codes in ``--help``,
and an internal error that is exit 3 whichever verb it comes from.

The cases that need a fresh interpreter (no torch imported, a bug planted before the CLI starts, the hand-over
to torchrun) run one; they import no torch, so they take a fraction of a second each.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchport import cli
from torchport.cli_parser import parse, upgrade_json_file

LAYERS = "model:\n  layers:\n    - flatten\n    - linear: {out_features: classes}\n"


def python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONWARNINGS", "TORCHPORT_WORKER_SAID")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


# --- --version -----------------------------------------------------------------------------------------------

VERSION_PROBE = """
import sys
from torchport.cli import main
try:
    main(["--version"])
except SystemExit as stop:
    print(stop.code, "torch" in sys.modules)
"""


def test_version_is_the_package_metadata_and_imports_no_torch() -> None:
    done = python(VERSION_PROBE)
    assert done.returncode == 0, done.stderr
    version, exit_line = done.stdout.splitlines()
    assert version == f"torchport {importlib.metadata.version('torchport')}"
    assert exit_line == "0 False"  # exit 0, and no torch imported for it


def test_the_module_and_the_command_agree_on_the_version() -> None:
    done = python("import torchport; print(torchport.__version__)")
    assert done.stdout.strip() == importlib.metadata.version("torchport"), done.stderr


# --- --debug -------------------------------------------------------------------------------------------------

# A bug planted in the stage `torchport schema` calls, in a fresh interpreter that then runs the real CLI.
PLANTED_BUG = """
import sys
from torchport.bundle import manifest
from torchport.cli import main

def broken():
    raise RuntimeError("planted bug")

manifest.manifest_json_schema = broken
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_verb_shows_the_traceback_and_keeps_exit_3(where: str) -> None:
    args = ["--debug", "schema", "manifest"] if where == "before" else ["schema", "manifest", "--debug"]
    done = python(PLANTED_BUG, *args)
    assert done.returncode == 3, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert ", in broken\nRuntimeError: planted bug" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "internal error: RuntimeError: planted bug"
    assert done.stdout == ""


def test_without_debug_an_internal_error_is_one_line() -> None:
    done = python(PLANTED_BUG, "schema", "manifest")
    assert done.returncode == 3
    assert done.stderr.strip() == "internal error: RuntimeError: planted bug (rerun with --debug for the traceback)"


def test_debug_after_the_verb_shows_a_config_errors_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(LAYERS + "train: {epochs: many}\n")
    assert cli.main(["validate", str(config), "--debug"]) == 2  # the exit code does not change with --debug
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert err.strip().splitlines()[-1].startswith("error: train.epochs: ")


def test_debug_given_before_the_verb_is_not_reset_by_the_verbs_own_option() -> None:
    assert parse(["--debug", "schema", "manifest"]).debug is True
    assert parse(["schema", "manifest", "--debug"]).debug is True
    assert parse(["schema", "manifest"]).debug is False


HAND_OVER_PROBE = """
import json, os, sys
from torchport.cli import main

def hand_over(path, argv):
    print(json.dumps(argv))  # torchrun's workers inherit this stdout
    raise SystemExit(0)

os.execv = hand_over
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps({"torch": "torch" in sys.modules}))
"""


def test_debug_and_json_after_the_verb_reach_the_torchrun_workers(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(LAYERS)
    args = ["train", "cfg.yaml", "--nproc-per-node", "2", "--run-dir", "run", "--debug", "--json", "train.epochs=1"]
    done = python(HAND_OVER_PROBE, *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    command_line, probe_line = done.stdout.splitlines()  # the hand-over kept stdout for the workers
    workers = json.loads(command_line)
    workers = workers[workers.index("torchport.cli") + 1 :]  # after `-m torchport.cli`: what each worker runs
    assert workers[: workers.index("train") + 1] == ["--debug", "train"], workers
    assert "--json" in workers and "train.epochs=1" in workers, workers
    assert json.loads(probe_line) == {"torch": False}


# --- exit codes ----------------------------------------------------------------------------------------------


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    for line in ("exit codes:", "  0  ok", "  1  a check failed", "  2  bad usage, config or input", "  3  internal"):
        assert line in out, out
    assert "--version" in out and "--json" in out


@pytest.mark.parametrize(
    ("verb", "exit_1"),
    [
        ("verify", "an artifact failed its parity"),
        ("optimize", "strict_variants"),
        ("conformance", "a runtime failed"),
        ("run", "failed verification"),
        ("inspect", None),
        ("train", None),
    ],
)
def test_each_verbs_help_lists_its_exit_codes(
    capsys: pytest.CaptureFixture[str], verb: str, exit_1: str | None
) -> None:
    with pytest.raises(SystemExit):
        cli.main([verb, "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "  2  bad usage" in out and "  3  internal error" in out
    if exit_1 is None:
        assert "  1  " not in out
    else:
        assert exit_1 in out.split("  1  ", 1)[1].splitlines()[0]


# The smallest command line each verb parses; the verb itself is replaced by one that fails as a bug would.
COMMAND_LINES = {
    "validate": ["cfg.yaml"],
    "train": ["cfg.yaml"],
    "blocks": [],
    "export": ["run"],
    "verify": ["bundle"],
    "optimize": ["bundle"],
    "conformance": ["bundle"],
    "bench": ["bundle"],
    "inspect": ["bundle"],
    "schema": ["manifest"],
    "launch": ["cfg.yaml", "--emit", "slurm"],
    "run": [],
    "serve": ["bundle"],
    "package": ["bundle", "--to", "triton", "--out", "repo"],
}


def test_every_verb_has_a_command_line_here() -> None:
    assert set(COMMAND_LINES) == set(cli.VERBS)


@pytest.mark.parametrize("verb", sorted(COMMAND_LINES))
def test_a_bug_in_any_verb_exits_3_not_1(
    verb: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_: object) -> int:
        raise KeyError("planted")

    monkeypatch.setitem(cli.VERBS, verb, broken)
    assert cli.main([verb, *COMMAND_LINES[verb]]) == 3
    assert capsys.readouterr().err.startswith("internal error: KeyError: 'planted'")


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["verify"])
    assert stop.value.code == 2 and "error: the following arguments are required: bundle" in capsys.readouterr().err


# --- --json FILE, as bench and conformance took it before --json meant stdout --------------------------------


@pytest.mark.parametrize(
    ("given", "understood"),
    [
        (["bench", "b", "--json", "out.json"], ["bench", "b", "--json-out", "out.json"]),
        (["--debug", "conformance", "--json=results", "b"], ["--debug", "conformance", "--json-out", "results", "b"]),
        (["bench", "b", "--json"], ["bench", "b", "--json"]),
        (["bench", "--json", "b"], ["bench", "--json", "b"]),  # a bundle, not a file: --json means stdout
        (["verify", "b", "--json"], ["verify", "b", "--json"]),
    ],
)
def test_json_file_of_before_is_json_out(given: list[str], understood: list[str]) -> None:
    assert upgrade_json_file(given) == understood


def test_json_file_of_before_says_the_new_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(upgrade_json_file(["bench", "b", "--json", "out.json"]))
    assert (args.bundle, args.json, args.json_out) == ("b", False, "out.json")
    assert "--json-out FILE" in capsys.readouterr().err
    args = parse(upgrade_json_file(["bench", "--json", "b"]))
    assert (args.bundle, args.json, args.json_out) == ("b", True, None)
