"""What the report's templates are given: plain text, numbers already formatted, and a few shapes (a table, a
marked cell). No HTML is made in Python; the templates hold all of it, and Jinja2 escapes every value that
reaches them, so a label or a name from the manifest, the summary or bench.json is shown, never run.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Mark:
    """Text with a look: a verdict or a ratio in the report's pass/fail colour, or a checksum in code type."""

    text: str
    look: Literal["pass", "fail", "code"]


Cell = str | Mark | tuple[str | Mark, ...]
"""A table cell: text, marked text, or a run of both (a verdict followed by its reason)."""


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]


def verdict(passed: bool, failed_as: str = "FAIL") -> Mark:
    return Mark("pass", "pass") if passed else Mark(failed_as, "fail")


def ratio_mark(value: float | None) -> str | Mark:
    """A speed ratio: green from 1× up (faster than the reference), red below."""
    if value is None:
        return "-"
    return Mark(f"{value:.2f}×", "pass" if value >= 1 else "fail")


def shell_word(path: Path) -> str:
    """A path as a shell word: the reproduce commands are meant to be pasted."""
    return shlex.quote(str(path))
