"""Name -> component lookup: one mechanism for blocks, data sources, runtimes and export variants.

A name is registered eagerly (``@register_block("spp")`` in a user's file), lazily as an import path that is
loaded only when the name is used (the built-ins below, so that validating a config never imports torch), or,
where a kind allows it, written in the config as an import path ``package.module:Name`` to the user's own code;
the config file's folder is put on ``sys.path`` first, so ``my_blocks:SpatialPyramidPool`` beside the config just
works without editing torchport. ``names()`` never imports anything, except a kind's *providers*: modules whose
import registers a family of built-ins at once (the blocks).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from torchport.errors import ConfigError, first_line, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of short names to components with helpful errors on unknown names."""

    def __init__(
        self, kind: str, hint: str = "", providers: Iterable[str] = (), lazy: Mapping[str, str] | None = None
    ) -> None:
        """``lazy``: built-in names and the ``module:attr`` each stands for, imported on first use."""
        self.kind = kind
        self.hint = hint  # appended to the unknown-name error: where the user can see or add names
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = dict(lazy or {})
        self._providers = list(providers)

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item
        return item

    def register_lazy(self, name: str, target: str) -> None:
        """Make ``name`` stand for ``module:attr``, imported on first use: listing names stays cheap."""
        if name in self._items or self._lazy.get(name, target) != target:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._lazy[name] = target

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@REGISTRY.decorator("name")`` registers what it decorates and hands it back unchanged."""

        def decorate(item: T) -> T:
            return self.register(name, item)

        return decorate

    def _load_providers(self) -> None:
        while self._providers:
            importlib.import_module(self._providers.pop(0))

    def names(self) -> list[str]:
        """Every name, in the order registered (built-ins first): conformance runs runtimes in this order."""
        self._load_providers()
        return list(dict.fromkeys([*self._lazy, *self._items]))

    def __contains__(self, name: object) -> bool:
        self._load_providers()
        return name in self._items or name in self._lazy

    def check(self, name: str, where: str = "") -> str:
        """``name`` unchanged when it is known, else a ConfigError naming ``where``: for config validators."""
        if name not in self:
            raise ConfigError(self._unknown(name, where))
        return name

    def get(self, name: str, where: str = "") -> T:
        """The component for a registered name (imported now if it was lazy); ConfigError on an unknown one."""
        self._load_providers()
        if name not in self._items and name in self._lazy:
            self._items[name] = import_object(self._lazy[name], where=where)
        if name in self._items:
            return self._items[name]
        raise ConfigError(self._unknown(name, where))

    def resolve(self, name: str, import_paths: Iterable[Path] = (), where: str = "") -> T:
        """A registered name, or an import path ``package.module:Name`` to the user's own code."""
        if ":" in name and name not in self:
            return import_object(name, import_paths, where)
        return self.get(name, where)

    def _unknown(self, name: str, where: str) -> str:
        """Without a hint of its own, a kind lists its names: there are few, and the user needs to see them."""
        prefix = f"{where}: " if where else ""
        names = self.names()
        hint = self.hint or f" (expected one of: {', '.join(names)})"
        return f"{prefix}unknown {self.kind} '{name}'{suggest(name, names)}{hint}"


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


BLOCKS: Registry[Callable[..., Any]] = Registry(
    "block",
    hint=" (see `torchport blocks`, or name your own as package.module:ClassName)",
    providers=["torchport.models.blocks"],
)


def register_block(name: str) -> Callable[[T], T]:
    """Register an ``nn.Module`` class or a factory function under a short name usable in ``model.layers``.

    Constructor arguments named ``in_channels``, ``in_features``, ``input_size``, ``embed_dim``, ``d_model``,
    ``num_features`` or ``in_shape`` are filled in from the shape of the data flowing into the block.
    """
    return BLOCKS.decorator(name)  # type: ignore[return-value]


# The built-in data sources, runtimes and export variants, by where they live: listing or validating their names
# imports none of them (so a config error never imports torch); using one imports its module.
DATA_SOURCES: Registry[Callable[..., Any]] = Registry(
    "data source",
    lazy={
        "digits": "torchport.data.sources:read_digits",
        "iris": "torchport.data.sources:read_iris",
        "wine": "torchport.data.sources:read_wine",
        "breast_cancer": "torchport.data.sources:read_breast_cancer",
        "csv": "torchport.data.tables:read_csv",
        "parquet": "torchport.data.tables:read_parquet",
        "npy": "torchport.data.sources:read_npy",
        "npz": "torchport.data.sources:read_npz",
        "image_folder": "torchport.data.images:read_image_folder",
    },
)

# Conformance runtimes, in the order `torchport conformance` runs them; the v2 clients run only against a server.
RUNTIMES: Registry[Any] = Registry(
    "runtime",
    lazy={
        "python": "torchport.runtimes.python:PYTHON",
        "openvino": "torchport.runtimes.python:OPENVINO",
        "node": "torchport.runtimes.node:RUNTIME",
        "browser": "torchport.runtimes.browser:RUNTIME",
        "cpp": "torchport.runtimes.cpp:RUNTIME",
        "c": "torchport.runtimes.c:RUNTIME",
        "java": "torchport.runtimes.java:RUNTIME",
        "go": "torchport.runtimes.go:RUNTIME",
        "rust": "torchport.runtimes.rust:RUNTIME",
    },
)

CLIENTS: Registry[Any] = Registry(
    "v2 client",
    lazy={
        "csharp": "torchport.clients:CSHARP",
        "r": "torchport.clients:R",
        "java-v2": "torchport.clients:JAVA",
    },
)

# Export variants built beside model.onnx by `torchport optimize`: each a Variant (file name and builder).
VARIANTS: Registry[Any] = Registry(
    "variant",
    lazy={
        "optimized": "torchport.export.variants:OPTIMIZED",
        "int8": "torchport.export.variants:INT8",
        "fp16": "torchport.export.variants:FP16",
        "ort": "torchport.export.variants:ORT",
    },
)
