"""The errors a user can see.

Each carries a one-line message that names what is wrong, where, and what to do; the CLI prints the message
and maps the type to an exit code (2 for usage and config problems, 1 for failed checks), never a traceback.
"""

from __future__ import annotations

import difflib


def first_line(exc: BaseException, empty: str = "") -> str:
    """The first line of an exception's message (``empty`` when it has none): a library's multi-line message
    still fits the one line a user is shown."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else empty


def suggest(name: str, choices: list[str]) -> str:
    """"; did you mean 'x'?" for the closest known name, or nothing: a typo is the commonest config error."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


class TorchportError(Exception):
    """Base of every error meant for a user's eyes."""

    exit_code = 1


class ConfigError(TorchportError):
    """The config (or a command-line override) is invalid: exit code 2."""

    exit_code = 2


class UsageError(TorchportError):
    """A command was called wrongly (missing path, bad option): exit code 2."""

    exit_code = 2


class DataError(ConfigError):
    """The data named by the config cannot be read or does not fit the task."""


class CheckpointError(TorchportError):
    """A checkpoint is missing, truncated, or fails its checksum."""

    exit_code = 2


class BundleError(TorchportError):
    """A bundle is malformed, escapes its folder, or fails a checksum."""

    exit_code = 2


class DistributedError(TorchportError):
    """The process group could not form, or lost a rank or the network mid-run: exit code 1."""

    exit_code = 1


class CheckFailed(TorchportError):
    """A verification ran and failed (parity, accuracy gate): exit code 1."""

    exit_code = 1
