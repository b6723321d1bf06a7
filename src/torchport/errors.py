"""The errors a user can see, and the one-line wording they share.

Each carries a one-line message that names what is wrong, where, and what to do; the CLI prints the message
and maps the type to an exit code (2 for usage and config problems, 1 for failed checks), never a traceback.
The wording helpers live here, at the bottom of the imports, so every layer words its errors the same way.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


def first_line(exc: BaseException, empty: str = "") -> str:
    """The first line of an exception's message (``empty`` when it has none): a library's multi-line message
    still fits the one line a user is shown."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else empty


def suggest(name: str, choices: list[str]) -> str:
    """The hint "; did you mean 'x'?" for the closest known name, or "": a typo is the commonest config error."""
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


# --------------------------------------------------------------------------------------------------------------
# Pydantic errors as one line: the config and a block's arguments are both pydantic models, and a user reads both
# errors the same way, by the key path that names the value at fault.


def format_key_path(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """('model', 'layers', 3, 'conv2d') -> 'model.layers[3].conv2d'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at ``loc`` (to list the keys it accepts)."""
    from pydantic import BaseModel  # only once an error is being reported: importing errors stays cheap

    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        current = nested[0]
    return current


# Pydantic names the alternative of a union in the location (``kernel_size.int``, ``aoti.literal['auto']``);
# these are not keys a user wrote, so they are taken out of the key path.
_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "none", "bytes", "list", "dict", "tuple", "set"})


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or not part.isidentifier())


def _describe_tag(tag: str) -> str:
    """``literal['same','valid']`` -> ``'same' or 'valid'``; other tags are type names already."""
    if tag.startswith("literal[") and tag.endswith("]"):
        return " or ".join(tag[len("literal[") : -1].split(","))
    return tag


def _alternative_of(loc: tuple[str | int, ...], head: tuple[str | int, ...]) -> bool:
    """Whether an error at ``loc`` is about the value at ``head`` failing one alternative of its union."""
    return len(loc) > len(head) and loc[: len(head)] == head and _is_union_tag(loc[len(head)])


def _user_key_path(loc: tuple[str | int, ...], unknown_key: bool) -> tuple[str | int, ...]:
    """The location without union tags; an unknown key's last part is what the user wrote, even ``int``."""
    body = loc[:-1] if unknown_key else loc
    return tuple(part for part in body if not _is_union_tag(part)) + (loc[-1:] if unknown_key else ())


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """The first pydantic error as one line: key path, what was wrong, what was expected.

    An unknown key is reported before a missing one (``modle:`` is why ``model`` is missing), and the failed
    alternatives of a union (``int | tuple[int, int]``) are one error about one key.
    """
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
    first = errors[0]
    loc = tuple(first["loc"])
    unknown_key = first["type"] == "extra_forbidden"
    tag_at = next((i for i, part in enumerate(loc) if _is_union_tag(part)), None) if not unknown_key else None
    group = [first]
    if tag_at is not None:
        group = [error for error in errors if _alternative_of(tuple(error["loc"]), loc[:tag_at])]
        # A value with the outer type of one alternative that failed inside it ([3, 'a']) is reported there.
        first = max(group, key=lambda error: len(error["loc"]))
    path = format_key_path(((prefix,) if prefix else ()) + _user_key_path(tuple(first["loc"]), unknown_key))
    if unknown_key:
        holder = _model_at(model, loc)
        allowed = sorted(holder.model_fields) if holder else []
        hint = suggest(str(loc[-1]), allowed)
        message = f"{path}: unknown key{hint}" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
    elif first["type"] == "missing":
        message = f"{path}: required key is missing"
    elif tag_at is not None and len(group) > 1 and len(first["loc"]) == tag_at + 1:
        expected = " or ".join(_describe_tag(str(error["loc"][tag_at])) for error in group)
        message = f"{path}: expected {expected} (got {first.get('input')!r})"
    else:
        message = f"{path}: {first['msg'][0].lower()}{first['msg'][1:]} (got {first.get('input')!r})"
    more = len(errors) - len(group)
    return message + (f" [and {more} more error{'s' if more > 1 else ''}]" if more else "")
