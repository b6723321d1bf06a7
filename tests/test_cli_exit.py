"""The command ends with os._exit after doing Python's shutdown by hand (cli_exit.py): what a normal exit would have
done for the user's code must still happen, and the status must be the one main() gave."""

from __future__ import annotations

from pathlib import Path

import pytest

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
atexit.register(lambda: (here / "atexit.txt").write_text("ran"))
sys.stdout.write("unflushed line from the plugin")  # no newline, no flush: the exit must flush it
"""


def test_exit_waits_for_threads_runs_atexit_and_flushes(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "lingering.py").write_text(PLUGIN)
    config = tmp_path / "cfg.yaml"
    config.write_text(LAYERS + "plugins: [lingering]\n")
    result = cli("validate", str(config))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "thread.txt").read_text() == "finished"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert "unflushed line from the plugin" in result.stdout


def test_usage_errors_keep_their_status(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("no-such-verb")
    assert result.returncode == 2
    assert "no-such-verb" in result.stderr
    assert cli("--help").returncode == 0
