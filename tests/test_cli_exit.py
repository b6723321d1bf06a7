"""The command ends with os._exit after doing Python's shutdown by hand (cli_exit.py): what a normal exit would have
done for the user's code must still happen, and the status must be the one main() gave."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchport.cli_exit import exit_status

pytestmark = pytest.mark.slow  # subprocesses

LAYERS = "model:\n  layers:\n    - flatten\n    - linear: {out_features: classes}\n"

PLUGIN = """\
import atexit, concurrent.futures, pathlib, sys, threading, time

here = pathlib.Path(__file__).parent


def late() -> None:
    time.sleep(0.5)
    (here / "thread.txt").write_text("finished")


threading.Thread(target=late).start()  # not a daemon: a normal exit waits for it
idle = concurrent.futures.ThreadPoolExecutor(2)  # never shut down: a normal exit stops its workers, then joins them
idle.submit(time.sleep, 0.1).result()


def at_exit() -> None:
    (here / "atexit.txt").write_text("ran")
    sys.stdout.write("unflushed line from the plugin")  # after the verb's own output: only the exit flushes it


atexit.register(at_exit)


class Finalized:
    def __del__(self) -> None:  # runs only in Python's own shutdown (TORCHPORT_FULL_EXIT=1)
        (here / "del.txt").write_text("ran")


kept = Finalized()
"""


def _validate(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``torchport validate`` on a config whose plugin lingers; stdout buffered (no PYTHONUNBUFFERED), as a user's."""
    (folder / "lingering.py").write_text(PLUGIN)
    config = folder / "cfg.yaml"
    config.write_text(LAYERS + "plugins: [lingering]\n")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"} | env
    command = [sys.executable, "-m", "torchport.cli", "validate", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=environment)


def test_exit_waits_for_threads_runs_atexit_and_flushes(tmp_path: Path) -> None:
    result = _validate(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "thread.txt").read_text() == "finished"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert "unflushed line from the plugin" in result.stdout


def test_full_exit_runs_pythons_own_shutdown(tmp_path: Path) -> None:
    result = _validate(tmp_path, TORCHPORT_FULL_EXIT="1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "del.txt").read_text() == "ran"
    assert "unflushed line from the plugin" in result.stdout


def test_usage_errors_keep_their_status(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("no-such-verb")
    assert result.returncode == 2
    assert "no-such-verb" in result.stderr
    assert cli("--help").returncode == 0


def test_exit_status_is_what_sys_exit_would_give(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_status(SystemExit()) == 0
    assert exit_status(SystemExit(0)) == 0
    assert exit_status(SystemExit(2)) == 2
    assert exit_status(SystemExit("bad thing")) == 1
    assert capsys.readouterr().err == "bad thing\n"
