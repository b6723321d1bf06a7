"""Optimizers and schedulers by their torch.optim names, with arguments checked before training starts."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from torchport.config import SchedulerConfig, TrainConfig
from torchport.errors import ConfigError, suggest


def _optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    choices = [
        n for n, obj in vars(torch.optim).items() if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)
    ]
    cls = getattr(torch.optim, name, None)
    if name not in choices or cls is None:
        raise ConfigError(f"train.optimizer.name: unknown optimizer '{name}'{suggest(name, choices)}")
    return cls


def _scheduler_class(name: str) -> type[Any]:
    schedulers = torch.optim.lr_scheduler
    choices = [n for n, obj in vars(schedulers).items() if inspect.isclass(obj) and n.endswith(("LR", "Plateau"))]
    if name not in choices:
        raise ConfigError(f"train.scheduler.name: unknown scheduler '{name}'{suggest(name, choices)}")
    return getattr(schedulers, name)


def _check_kwargs(cls: type[Any], kwargs: dict[str, Any], where: str, skip: tuple[str, ...]) -> None:
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", *skip)]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{where}.{key}: not an argument of {cls.__name__}{suggest(key, accepted)}"
                f" (expected one of: {', '.join(accepted)})"
            )


def _culprit(build: Any, kwargs: dict[str, Any]) -> str | None:
    """The first argument that fails on its own (the others left at their defaults): the key an error should name.

    torch's messages ("Invalid learning rate: -1", "'<=' not supported between ...") rarely say which argument.
    """
    for key, value in kwargs.items():
        try:
            build({key: value})
        except (TypeError, ValueError, KeyError):
            return key
    return None


def build_optimizer(config: TrainConfig, parameters: Any) -> torch.optim.Optimizer:
    cls = _optimizer_class(config.optimizer.name)
    kwargs = config.optimizer.kwargs()
    _check_kwargs(cls, kwargs, "train.optimizer", skip=("params",))
    try:
        return cls(parameters, **kwargs)
    except (TypeError, ValueError) as exc:
        key = _culprit(lambda one: cls([nn.Parameter(torch.zeros(1))], **one), kwargs)
        if key is None:
            raise ConfigError(f"train.optimizer: {exc}") from None
        got = "" if str(kwargs[key]) in str(exc) else f" (got {kwargs[key]!r})"
        raise ConfigError(f"train.optimizer.{key}: {exc}{got}") from None


def scheduler_kwargs(config: SchedulerConfig, epochs: int, steps_per_epoch: int) -> dict[str, Any]:
    """The scheduler's arguments, with the horizon of cosine and one-cycle schedules filled in when omitted."""
    kwargs = config.kwargs()
    horizon = epochs * steps_per_epoch if config.interval == "step" else epochs
    if config.name == "CosineAnnealingLR":
        kwargs.setdefault("T_max", horizon)
    if config.name == "OneCycleLR":
        kwargs.setdefault("total_steps", epochs * steps_per_epoch)
    return kwargs


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any | None:
    if config.scheduler is None:
        return None
    cls = _scheduler_class(config.scheduler.name)
    kwargs = scheduler_kwargs(config.scheduler, config.epochs, steps_per_epoch)
    _check_kwargs(cls, kwargs, "train.scheduler", skip=("optimizer",))
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"train.scheduler: {exc}") from None


def check_optimizer_config(config: TrainConfig) -> None:
    """Build the optimizer and scheduler on a dummy parameter: every argument error surfaces at validate time."""
    optimizer = build_optimizer(config, [nn.Parameter(torch.zeros(1))])
    build_scheduler(config, optimizer, steps_per_epoch=1)
