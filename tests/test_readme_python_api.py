"""The README's "Python API" section runs: its ```python blocks, in order, as one script in a fresh folder.

A user copies these blocks first; if an API they show changes, this test fails instead of the README going stale.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Python API"


def python_blocks(readme: str) -> list[str]:
    """The ```python blocks between the section's heading and the next heading of its level."""
    start = readme.index(f"\n{SECTION}\n")
    end = readme.find("\n## ", start + len(SECTION) + 2)
    section = readme[start : end if end >= 0 else None]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


def test_the_section_shows_every_stage() -> None:
    text = "\n".join(python_blocks((ROOT / "README.md").read_text()))
    for call in ("tp.Config.from_dict(", "tp.train(", "tp.export(", "tp.verify(", "tp.Bundle.open(", ".predict("):
        assert call in text, f"the Python API section does not show {call}"
    assert "tp.serve(" in text and "background=True" in text


def test_the_python_api_blocks_run_in_order(tmp_path: Path) -> None:
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 4
    script = tmp_path / "readme_python_api.py"
    script.write_text("\n".join(blocks))
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "runs" / "digits-small" / "bundle" / "manifest.json").is_file()
    assert "logits" in done.stdout.splitlines()
