"""``torchport.progress.working``: a spinner on terminals, nothing at all elsewhere, the block untouched."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from rich.console import Console

from torchport.progress import working


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100), out


def test_a_terminal_shows_the_spinner_and_the_result_passes_through() -> None:
    console, out = _terminal()
    with working(console, "exporting ONNX"):
        value = 6 * 7
    assert value == 42
    assert "exporting ONNX" in out.getvalue()
    assert not console._live_stack  # the spinner stopped


def test_an_exception_propagates_and_the_spinner_stops() -> None:
    console, out = _terminal()
    with pytest.raises(ValueError, match="boom"), working(console, "compiling model.pt2"):
        raise ValueError("boom")
    assert "compiling model.pt2" in out.getvalue()
    assert not console._live_stack
    console.print("after")  # the console is usable again: no live display left holding it
    assert "after" in out.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda out: Console(file=out, force_terminal=True, quiet=True),
        lambda out: Console(file=out, force_terminal=False),
    ],
    ids=["quiet", "not-a-terminal"],
)
def test_quiet_and_non_terminal_consoles_get_nothing(make: Callable[[io.StringIO], Console]) -> None:
    out = io.StringIO()
    console = make(out)
    with working(console, "exporting ONNX"):
        pass
    with pytest.raises(RuntimeError), working(console, "exporting ONNX"):
        raise RuntimeError("still raised")
    assert out.getvalue() == ""


def test_no_console_is_quiet() -> None:
    with working(None, "exporting ONNX"):
        value = "done"
    assert value == "done"
