"""torchport: from a YAML config to a trained, exported, verified and deployable PyTorch model.

The public API is small: the config loader, the stage functions and the block decorator. They are imported
lazily so that ``torchport --help`` does not pay for importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "torchport.config",
    "Config": "torchport.config",
    "register_block": "torchport.registry",
    "load_data": "torchport.data",
    "train": "torchport.train.loop",
    "export_stage": "torchport.pipeline",
    "verify_bundle": "torchport.verify.bundle",
    "run_pipeline": "torchport.pipeline",
    "read_bundle": "torchport.bundle.manifest",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'torchport' has no attribute {name!r}")
