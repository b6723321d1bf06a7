"""torchport: from a YAML config to a trained, exported, verified and deployable PyTorch model.

The Python API (``import torchport as tp``) is every stage of the command line as a typed function, quiet unless
asked (``progress=True``): ``tp.Config.from_dict`` / ``tp.load_config``, ``tp.train``, ``tp.export``,
``tp.verify``, ``tp.optimize``, ``tp.conformance``, ``tp.bench``, ``tp.serve``, ``tp.run`` (all of them), and
``tp.Bundle.open(path).predict(x)``. The names are imported on first use, so ``import torchport`` and
``torchport --help`` do not pay for torch; ``dir(torchport)`` and an IDE list them all the same.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what an IDE and mypy see; at run time __getattr__ below imports each name on first use
    from torchport.api import bench, conformance, export, optimize, run, serve, train, verify
    from torchport.config import Config, load_config
    from torchport.predict import Bundle
    from torchport.registry import register_block
    from torchport.serve.settings import ServeSettings

    __version__: str

__all__ = [
    "Bundle",
    "Config",
    "ServeSettings",
    "__version__",
    "bench",
    "conformance",
    "export",
    "load_config",
    "optimize",
    "register_block",
    "run",
    "serve",
    "train",
    "verify",
]

_HOMES = {
    "Bundle": "torchport.predict",
    "Config": "torchport.config",
    "ServeSettings": "torchport.serve.settings",
    "load_config": "torchport.config",
    "register_block": "torchport.registry",
    **dict.fromkeys(["bench", "conformance", "export", "optimize", "run", "serve", "train", "verify"], "torchport.api"),
}

# Stage functions named like the subpackage that implements them (torchport.train, torchport.export, ...).
_STAGES_NAMED_LIKE_PACKAGES = frozenset({"bench", "export", "serve", "train", "verify"})


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchport")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _package_version()
    elif name in _HOMES:
        value = getattr(import_module(_HOMES[name]), name)
    else:
        raise AttributeError(f"module 'torchport' has no attribute {name!r}")
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__") and name.endswith("__"))})


class _Package(types.ModuleType):
    """The ``torchport`` module, keeping ``tp.train`` (and export, verify, bench, serve) the stage functions.

    Importing a subpackage makes Python set it as an attribute of its parent: the first ``import
    torchport.train.loop`` anywhere would turn ``tp.train`` into the package ``torchport.train``. Refusing that one
    assignment keeps the functions; the subpackages stay importable by name (``from torchport.train import loop``,
    ``import_module``, pickle), only the attribute chain does not lead to them: ``torchport.train.loop`` and
    ``import torchport.train.loop as loop`` fail. The code base imports with ``from``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _STAGES_NAMED_LIKE_PACKAGES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
