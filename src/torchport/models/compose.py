"""Compose ``model.layers`` into a plain ``nn.Module``.

Shapes are inferred by a dry run: each block is built from the shape of one sample flowing into it, then a
zero batch goes through it to learn the shape it hands on. Arguments are validated against the block's
signature with pydantic, so ``kernel_size: abc`` fails as ``model.layers[0].conv2d.kernel_size`` before any
tensor is made.
"""

from __future__ import annotations

import inspect
import typing
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from torch import nn

import torchport.models.blocks as _builtin_blocks  # noqa: F401  (registers the built-ins)
from torchport.errors import ConfigError, first_line, format_validation_error, suggest
from torchport.models.blocks import Residual
from torchport.models.spec import ModelSpec
from torchport.registry import BLOCKS

RESIDUAL = "residual"
CLASSES = "classes"

# Constructor arguments filled from the incoming sample shape: channel-like ones take the first dimension,
# feature-like ones the last.
FIRST_DIM_ARGS = ("in_channels", "num_features", "channels")
LAST_DIM_ARGS = ("in_features", "input_size", "embed_dim", "d_model", "in_dim", "input_dim")
SHAPE_ARGS = ("in_shape", "input_shape")
INFERRED_ARGS = FIRST_DIM_ARGS + LAST_DIM_ARGS + SHAPE_ARGS
# Arguments of standard backbones (torchvision.models:resnet18) that fetch pretrained weights over the network.
DOWNLOAD_ARGS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone")


@dataclass
class LayerSpec:
    """One parsed entry of ``model.layers``: a block name with its arguments, or a residual's children."""

    name: str
    path: str  # model.layers[3].conv2d: where the block's arguments are
    at: str  # model.layers[3]: the entry itself (block names with dots, pkg.mod:Cls, must not split it)
    args: dict[str, Any] = field(default_factory=dict)
    children: list[LayerSpec] = field(default_factory=list)


def parse_layers(entries: Sequence[Any], prefix: str = "model.layers") -> list[LayerSpec]:
    return [parse_layer(entry, f"{prefix}[{index}]") for index, entry in enumerate(entries)]


def parse_layer(entry: Any, path: str) -> LayerSpec:
    if isinstance(entry, str):
        return LayerSpec(entry, f"{path}.{entry}", path)
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(
            f"{path}: expected a block name (e.g. relu) or a one-key mapping {{name: {{arguments}}}}, got {entry!r}"
        )
    name, value = next(iter(entry.items()))
    where = f"{path}.{name}"
    if name == RESIDUAL:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: expected a non-empty list of layers")
        return LayerSpec(name, where, path, children=parse_layers(value, where))
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of arguments, got {value!r}")
    return LayerSpec(str(name), where, path, args=dict(value))


# --- signatures and argument validation ----------------------------------------------------------------------


def _callable_signature(factory: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # user code with unresolvable annotations: validate names only
        hints = {}
    return signature, hints


@cache
def _arguments_model(factory: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model of the factory's user-facing arguments (the inferred ones excluded)."""
    signature, hints = _callable_signature(factory)
    fields: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(name, Any)
        if name in INFERRED_ARGS:
            default = None
            annotation = Any
        elif parameter.default is inspect.Parameter.empty:
            default = ...
        else:
            default = parameter.default
        fields[name] = (annotation, default)
    accepts_extra = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    config = ConfigDict(extra="allow" if accepts_extra else "forbid", arbitrary_types_allowed=True)
    return create_model(f"{getattr(factory, '__name__', 'block')}_arguments", __config__=config, **fields)


def block_arguments(factory: Callable[..., Any]) -> list[tuple[str, str, str]]:
    """(name, type, default) of a block's user-facing arguments, for ``torchport blocks``."""
    rows = []
    for name, info in _arguments_model(factory).model_fields.items():
        if name in INFERRED_ARGS:
            continue
        type_name = str(info.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
        default = "required" if info.is_required() else repr(info.default)
        rows.append((name, type_name, default))
    return rows


def validate_arguments(
    factory: Callable[..., Any], args: dict[str, Any], where: str, num_outputs: int | None
) -> dict[str, Any]:
    """Check types and names; ``classes`` becomes the number of outputs (a placeholder before data is known)."""
    substituted = {k: (num_outputs or 2) if v == CLASSES else v for k, v in args.items()}
    fetching = [name for name in DOWNLOAD_ARGS if substituted.get(name) not in (None, False)]
    if fetching:
        raise ConfigError(
            f"{where}.{fetching[0]}: pretrained weights would be downloaded, and torchport never downloads; "
            f"set {fetching[0]}: null to train from scratch"
        )
    inferred = [name for name in substituted if name in INFERRED_ARGS]
    if inferred:
        raise ConfigError(f"{where}.{inferred[0]}: is inferred from the data's shape; remove it from the config")
    arguments = _arguments_model(factory)
    if arguments.model_config.get("extra") == "forbid":
        # Checked here rather than by pydantic so the accepted list leaves out the inferred arguments.
        accepted = [name for name in arguments.model_fields if name not in INFERRED_ARGS]
        for key in substituted:
            if key not in accepted:
                expected = f"expected one of: {', '.join(accepted)}" if accepted else "the block takes none"
                raise ConfigError(f"{where}.{key}: unknown argument{suggest(key, accepted)} ({expected})")
    try:
        validated = arguments.model_validate(substituted)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, arguments, prefix=where)) from None
    given = set(substituted) | set(validated.model_extra or {})
    return {name: getattr(validated, name) for name in given}


# --- checking and building -----------------------------------------------------------------------------------


def check_layers(entries: Sequence[Any], import_paths: Iterable[Path] = ()) -> None:
    """Validate block names and argument types without knowing the data (``torchport validate``)."""
    for spec in parse_layers(entries):
        _check_spec(spec, list(import_paths))


def _resolve_block(spec: LayerSpec, import_paths: list[Path]) -> Callable[..., Any]:
    """The block's factory: registered, or imported by path and then a class or function with a signature."""
    factory = BLOCKS.resolve(spec.name, import_paths, where=spec.at)
    try:
        _callable_signature(factory)
    except (TypeError, ValueError):  # `my_blocks:SIZE = 3`, or a builtin without a signature
        raise ConfigError(
            f"{spec.at}: '{spec.name}' is not a block; expected an nn.Module class or a function returning one,"
            f" got {type(factory).__name__}"
        ) from None
    return factory


def _check_spec(spec: LayerSpec, import_paths: list[Path]) -> None:
    if spec.name == RESIDUAL:
        for child in spec.children:
            _check_spec(child, import_paths)
        return
    factory = _resolve_block(spec, import_paths)
    validate_arguments(factory, spec.args, spec.path, None)


def _inferred_kwargs(factory: Callable[..., Any], in_shape: tuple[int, ...]) -> dict[str, Any]:
    signature, _ = _callable_signature(factory)
    kwargs: dict[str, Any] = {}
    for name in signature.parameters:
        if name in FIRST_DIM_ARGS:
            kwargs[name] = in_shape[0]
        elif name in LAST_DIM_ARGS:
            kwargs[name] = in_shape[-1]
        elif name in SHAPE_ARGS:
            kwargs[name] = tuple(in_shape)
    return kwargs


@dataclass
class BuildContext:
    num_outputs: int
    import_paths: list[Path]


Flow = tuple[tuple[int, ...], torch.dtype]  # what flows between blocks: one sample's shape, and the dtype


def _dry_run(module: nn.Module, in_shape: tuple[int, ...], dtype: torch.dtype, where: str) -> Flow:
    """Push a zero batch of two samples through ``module`` to learn the shape and dtype it hands on."""
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros((2, *in_shape), dtype=dtype))
    except Exception as exc:
        detail = first_line(exc, type(exc).__name__)
        hint = (
            ""
            if dtype.is_floating_point
            else " (its input is integer token ids: start with `embedding`, or give the data as floats)"
        )
        raise ConfigError(
            f"{where}: does not accept input of shape {tuple(in_shape)} per sample: {detail}{hint}"
        ) from None
    finally:
        module.train()
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{where}: must return one tensor, returned {type(out).__name__}")
    return tuple(out.shape[1:]), out.dtype


def _build_one(spec: LayerSpec, flow: Flow, ctx: BuildContext) -> tuple[nn.Module, Flow]:
    in_shape, dtype = flow
    if spec.name == RESIDUAL:
        body, (out_shape, body_dtype) = _build_sequence(spec.children, flow, ctx)
        if out_shape != in_shape:
            raise ConfigError(
                f"{spec.path}: the residual body must keep the shape {in_shape}, but it returns {out_shape}"
            )
        return Residual(body), (in_shape, torch.promote_types(dtype, body_dtype))  # x + body(x)
    factory = _resolve_block(spec, ctx.import_paths)
    kwargs = validate_arguments(factory, spec.args, spec.path, ctx.num_outputs)
    kwargs.update(_inferred_kwargs(factory, in_shape))
    try:
        module = factory(**kwargs)
    except Exception as exc:
        raise ConfigError(f"{spec.path}: cannot be built: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{spec.path}: '{spec.name}' did not return an nn.Module")
    return module, _dry_run(module, in_shape, dtype, spec.path)


def _build_sequence(specs: list[LayerSpec], flow: Flow, ctx: BuildContext) -> tuple[nn.Sequential, Flow]:
    """Build block after block; each sees the shape and dtype the previous one really returns (integer token
    ids stay integers through `flatten` or `reshape` until an `embedding` turns them into vectors)."""
    modules = []
    for spec in specs:
        module, flow = _build_one(spec, flow, ctx)
        modules.append(module)
    return nn.Sequential(*modules), flow


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training split's statistics, stored as buffers so they travel with the
    weights and the exported graph takes raw inputs. Integer inputs (token ids) pass through untouched."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x
        return (x - self.mean) / self.std


def build_model(spec: ModelSpec) -> nn.Module:
    """The network: ``normalize`` (training statistics) then ``layers`` (the config's blocks, same indices)."""
    dtype = torch.int64 if spec.input_dtype == "int64" else torch.float32
    ctx = BuildContext(spec.num_outputs, list(spec.import_paths))
    body, (out_shape, _) = _build_sequence(parse_layers(spec.layers), (tuple(spec.input_shape), dtype), ctx)
    if out_shape != (spec.num_outputs,):
        raise ConfigError(
            f"model.layers: the network returns shape {out_shape} per sample, but the task needs "
            f"({spec.num_outputs},); end with `linear: {{out_features: classes}}` (after `flatten` if needed)"
        )
    normalize = Standardize(
        torch.as_tensor(spec.input_mean, dtype=torch.float32), torch.as_tensor(spec.input_std, dtype=torch.float32)
    )
    return nn.Sequential(OrderedDict(normalize=normalize, layers=body))


def layer_names(entries: Sequence[Any]) -> list[str]:
    """Human names of the top-level layers, e.g. ``model.layers[3] (conv2d)``, indexed like the config."""
    return [f"model.layers[{i}] ({spec.name})" for i, spec in enumerate(parse_layers(entries))]
