"""The checks of a loaded config that need the code behind its names: blocks and their arguments, the optimizer
and scheduler and their arguments, and the data files a source reads.

``torchport.config`` checks what a config may contain without importing torch; this module checks what the
installed code makes of it, and imports models and training to do so (inside :func:`check_config`, so that
importing this module stays cheap). A stage calls both before spending time: ``check_config(load_config(path))``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchport.config import Config, DataConfig
from torchport.errors import ConfigError

# The sources that read the user's own files (data.path): a folder for image_folder, a file for the others.
FILE_SOURCES = ("csv", "parquet", "npy", "npz", "image_folder")


def check_config(config: Config) -> Config:
    """Checks that need more than types: files exist, blocks exist, optimizer arguments fit. Returns ``config``
    unchanged, so that loading and checking read as one expression."""
    from torchport.data.augment import build_augment
    from torchport.models.compose import check_layers
    from torchport.train.optim import check_optimizer_config

    check_data_files(config.data)
    build_augment(config.data.augment, config.seed)  # an unknown transform is named before any data is read
    check_loggers(config.train.loggers)
    check_layers(config.model.layers, config.import_paths)
    check_optimizer_config(config.train)
    return config


def check_data_files(data: DataConfig) -> None:
    """The files a source reads exist: cheap and torch-free, so the launcher checks them before torchrun starts."""
    if data.source not in FILE_SOURCES:
        return
    if data.path is None:
        raise ConfigError(f"data.path: required for source '{data.source}'")
    if data.source == "image_folder":
        if not data.path.is_dir():
            raise ConfigError(f"data.path: folder not found: {data.path}")
    elif not data.path.is_file():
        raise ConfigError(f"data.path: file not found: {data.path}")
    if data.source == "npy":
        if data.targets is None:
            raise ConfigError("data.targets: required for source 'npy' (the .npy file of targets)")
        if not data.targets.is_file():
            raise ConfigError(f"data.targets: file not found: {data.targets}")


# what each train.loggers entry needs installed (the optional extra `torchport[loggers]`)
LOGGER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def check_loggers(loggers: Sequence[str]) -> None:
    """A logger whose library is not installed is a config error now, not an internal error after data loading."""
    import importlib.util

    for index, name in enumerate(loggers):
        package = LOGGER_PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"train.loggers[{index}]: '{name}' needs the {package} package; pip install 'torchport[loggers]'"
            )
