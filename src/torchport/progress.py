"""A spinner with elapsed time for the long silent steps (export, AOTI compilation, variant and runner builds).

``with working(console, "exporting ONNX"): ...`` shows it while the block runs, on a terminal only: a quiet
console, ``None`` or a console writing to a file or pipe (logs, CI) gets nothing, so their output is what it was
without it. The spinner is transient: it leaves no line behind, the stage's own result line follows as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@contextlib.contextmanager
def working(console: Console | None, what: str) -> Iterator[None]:
    """A spinner saying ``what`` with the time since it began, on ``console`` while the block runs (terminals
    only); the block's result and exceptions pass through unchanged, and the spinner stops either way."""
    if console is None or console.quiet or not console.is_terminal:
        yield
        return
    from rich.errors import LiveError
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    spinner = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    )
    spinner.add_task(what, total=None)
    try:
        spinner.start()
    except LiveError:  # another live display (e.g. the training bar) holds the console: stay silent
        yield
        return
    try:
        yield
    finally:
        spinner.stop()
