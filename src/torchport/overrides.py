"""Command-line overrides of a raw config: ``key.path[2].name=value``, the value parsed as YAML.

Applied to the raw mapping before validation, so an override is checked exactly like the same key in the file.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from torchport.errors import ConfigError

_INDEX = re.compile(r"^(?P<key>[^\[\]]*)((?:\[\d+\])*)$")


def _split_key_path(key_path: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in key_path.split("."):
        match = _INDEX.match(piece)
        if not match or (not match.group("key") and not match.group(2)):
            raise ConfigError(f"override '{key_path}': malformed key path")
        if match.group("key"):
            parts.append(match.group("key"))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", piece))
    return parts


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b[2].c=value`` in the raw config; the value is parsed as YAML (so 2 is an int, [1, 2] a list)."""
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected key.path=value")
    key_path, _, text = override.partition("=")
    parts = _split_key_path(key_path.strip())
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _descend(node, part, parts[depth + 1], key_path)
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"override '{key_path}': index [{last}] is out of range")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key_path}': '{last}' is not inside a mapping")
        node[last] = value


def _descend(node: Any, part: str | int, next_part: str | int, key_path: str) -> Any:
    if isinstance(part, int):
        if not isinstance(node, list) or part >= len(node):
            raise ConfigError(f"override '{key_path}': index [{part}] is out of range")
        child = node[part]
        if isinstance(child, str) and isinstance(next_part, str):
            # A bare block name (`- relu`) gains arguments: `layers[1].relu.inplace=true` makes it {relu: {...}}.
            if child != next_part:
                raise ConfigError(f"override '{key_path}': entry [{part}] is '{child}', not '{next_part}'")
            child = node[part] = {child: {}}
        return child
    if not isinstance(node, dict):
        raise ConfigError(f"override '{key_path}': '{part}' is not inside a mapping")
    child = node.get(part)
    if child is None:
        child = [] if isinstance(next_part, int) else {}
        node[part] = child
    return child
