"""Name -> component lookup, for blocks and anything else a config names.

One registry per kind. A name is either registered (built-ins, or a user's ``@register_block("spp")``) or an
import path ``package.module:Name`` to the user's own code; the config file's folder is put on ``sys.path``
first, so ``my_blocks:SpatialPyramidPool`` beside the config just works without editing torchport.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

from torchport.config import suggest
from torchport.errors import ConfigError, first_line

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of short names to components with helpful errors on unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item
        return item

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def resolve(self, name: str, import_paths: Iterable[Path] = (), where: str = "") -> T:
        """Find ``name`` in the registry or import it; ConfigError naming ``where`` when neither works."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return import_object(name, import_paths, where)
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}unknown {self.kind} '{name}'{suggest(name, self.names())}"
            f" (see `torchport blocks`, or name your own as package.module:ClassName)"
        )


def import_object(path: str, import_paths: Iterable[Path] = (), where: str = "") -> Any:
    """Import ``package.module:Attr`` with the given folders importable."""
    prefix = f"{where}: " if where else ""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or module_name.startswith("."):
        raise ConfigError(f"{prefix}'{path}' is not an import path; expected package.module:ClassName")
    module = import_user_module(module_name, import_paths, where)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{prefix}module '{module_name}' has no attribute '{attr}'") from None


def import_user_module(module_name: str, import_paths: Iterable[Path] = (), where: str = "") -> Any:
    """Import a user's module (its ``@register_block`` decorators run) with the given folders importable."""
    prefix = f"{where}: " if where else ""
    for folder in import_paths:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{prefix}cannot import module '{module_name}': {exc}") from None
    except SystemExit as exc:  # a plugin must not end the process; say which one tried
        raise ConfigError(f"{prefix}importing module '{module_name}' called sys.exit({exc.code!r})") from None
    except Exception as exc:  # the user's module itself is broken (syntax error, raises at import)
        raise ConfigError(
            f"{prefix}importing module '{module_name}' failed: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    return module


BLOCKS: Registry[Callable[..., Any]] = Registry("block")


def register_block(name: str) -> Callable[[T], T]:
    """Register an ``nn.Module`` class or a factory function under a short name usable in ``model.layers``.

    Constructor arguments named ``in_channels``, ``in_features``, ``input_size``, ``embed_dim``, ``d_model``,
    ``num_features`` or ``in_shape`` are filled in from the shape of the data flowing into the block.
    """

    def decorate(obj: T) -> T:
        BLOCKS.register(name, obj)  # type: ignore[arg-type]
        return obj

    return decorate
