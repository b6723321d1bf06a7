"""What the CLI does before it needs torch must not import it: ``--help``, config errors, the torchrun hand-off.

Importing torch takes seconds; a user who mistyped a key, or a launcher whose process torchrun replaces at
once, should not wait for it. Each case runs in a fresh interpreter (this one has torch loaded long ago) that
reports the exit code and whether ``torch`` ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# os.execv stands in for torchrun: the launcher's last act is to hand its process over, so it ends the probe.
PROBE = """
import json, os, sys
from torchport.cli import main

def hand_over(path, argv):
    raise SystemExit("handed over")

os.execv = hand_over
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""

LAYERS = """\
model:
  layers:
    - conv2d: {out_channels: 4, kernel_size: 3, padding: 1}
    - relu
    - flatten
    - linear: {out_features: classes}
"""

CASES = {
    "help": ([], ["--help"], 0),
    "unknown key": (["train: {epohcs: 3}"], ["validate", "cfg.yaml"], 2),
    "wrong type": (["train: {epochs: many}"], ["validate", "cfg.yaml"], 2),
    "unknown data source": (["data: {source: mnist}"], ["validate", "cfg.yaml"], 2),
    "unknown variant": (["export: {variants: [int4]}"], ["validate", "cfg.yaml"], 2),
    "torchrun hand-off": ([], ["train", "cfg.yaml", "--nproc-per-node", "2", "--run-dir", "run"], "handed over"),
    "missing data file before the hand-off": (
        ["data: {source: csv, path: missing.csv, target: y}"],
        ["train", "cfg.yaml", "--nproc-per-node", "2", "--run-dir", "run"],
        2,
    ),
}


def probe(args: list[str], cwd: Path) -> tuple[dict[str, object], str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONWARNINGS", "TORCHPORT_WORKER_SAID")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize(("extra", "args", "expected"), CASES.values(), ids=CASES.keys())
def test_no_torch_before_it_is_needed(tmp_path: Path, extra: list[str], args: list[str], expected: object) -> None:
    (tmp_path / "cfg.yaml").write_text("\n".join([LAYERS, *extra]) + "\n")
    result, stderr = probe(args, tmp_path)
    assert result["code"] == expected, stderr
    assert result["torch"] is False, f"{' '.join(args)} imported torch"
    if expected == 2:
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: "), stderr


def test_the_probe_sees_torch_when_a_verb_needs_it(tmp_path: Path) -> None:
    """The same probe on a config error that only torch can find (a block's argument): torch is imported."""
    (tmp_path / "cfg.yaml").write_text(LAYERS.replace("kernel_size: 3", "kernal_size: 3"))
    result, stderr = probe(["validate", "cfg.yaml"], tmp_path)
    assert result == {"code": 2, "torch": True}, stderr
