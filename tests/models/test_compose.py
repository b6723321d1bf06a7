"""Composition: inferred sizes, ``classes``, the one-line modularity claim, and a plain ``nn.Module`` out."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from torchport.config import load_config
from torchport.errors import ConfigError
from torchport.models.compose import LayerSpec, build_model, check_layers, layer_names, parse_layers
from torchport.models.spec import ModelSpec

from .helpers import model_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DIGITS_SHAPE = (1, 8, 8)


def digits_layers(name: str) -> list[Any]:
    return load_config(EXAMPLES / f"{name}.yaml").model.layers


# --- inferred sizes and `classes` ----------------------------------------------------------------------------


def test_input_sizes_are_inferred_from_the_incoming_shape() -> None:
    layers = [
        {"conv2d": {"out_channels": 4, "kernel_size": 3}},
        "batchnorm2d",
        "flatten",
        {"reshape": {"shape": [4, 36]}},
        "layernorm",
        {"lstm": {"hidden_size": 5}},
        {"self_attention": {"num_heads": 1}},
        {"transformer_encoder_layer": {"nhead": 1}},
        "flatten",
        "batchnorm1d",
        {"linear": {"out_features": "classes"}},
    ]
    model = build_model(model_spec(layers, (3, 8, 8), num_outputs=7))
    conv, norm2d, _, _, layernorm, lstm, attention, encoder, _, norm1d, linear = model.layers
    assert conv.in_channels == 3
    assert norm2d.num_features == 4
    assert layernorm.normalized_shape == (36,)
    assert lstm.rnn.input_size == 36
    assert attention.attention.embed_dim == 5
    assert encoder.self_attn.embed_dim == 5
    assert norm1d.num_features == 4 * 5
    assert (linear.in_features, linear.out_features) == (20, 7)


def test_out_features_classes_takes_the_number_of_outputs() -> None:
    layers = ["flatten", {"linear": {"out_features": "classes"}}]
    for outputs in (1, 2, 10):
        model = build_model(model_spec(layers, (4,), num_outputs=outputs))
        assert model.layers[1].out_features == outputs


def test_an_inferred_argument_in_the_config_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^model\.layers\[1\]\.linear\.in_features: is inferred"):
        build_model(model_spec(["flatten", {"linear": {"in_features": 64, "out_features": 3}}], (4,)))


# --- errors found while composing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [{"conv2d": {"out_channels": 2, "kernel_size": 30}}, "flatten", {"linear": {"out_features": 3}}],
            r"^model\.layers\[0\]\.conv2d: does not accept input of shape \(1, 8, 8\) per sample",
        ),
        (["flatten", {"linear": {"out_features": 5}}], r"^model\.layers: the network returns shape \(5,\) per sample"),
        (["flatten"], r"^model\.layers: the network returns shape \(64,\)"),
        (
            [{"residual": ["flatten"]}, "flatten", {"linear": {"out_features": 3}}],
            r"^model\.layers\[0\]\.residual: the residual body must keep the shape \(1, 8, 8\)",
        ),
        ([{"residual": []}], r"^model\.layers\[0\]\.residual: expected a non-empty list"),
        ([{"relu": {}, "tanh": {}}], r"^model\.layers\[0\]: expected a block name"),
        ([{"conv2d": 3}], r"^model\.layers\[0\]\.conv2d: expected a mapping of arguments"),
        (
            ["flatten", {"dropout": {"p": 1.5}}, {"linear": {"out_features": 3}}],
            r"^model\.layers\[1\]\.dropout: cannot be built: dropout probability",
        ),
    ],
)
def test_composition_errors_name_the_layer(layers: list[Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        build_model(model_spec(layers, DIGITS_SHAPE))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (["relu", "relu", "maxpool"], r"^model\.layers\[2\]: unknown block 'maxpool'; did you mean 'maxpool2d'\?"),
        (
            [{"residual": ["relu", "rleu"]}],
            r"^model\.layers\[0\]\.residual\[1\]: unknown block 'rleu'; did you mean 'relu'\?",
        ),
        (
            [{"conv2d": {"out_channels": 4, "kernal_size": 3}}],
            r"^model\.layers\[0\]\.conv2d\.kernal_size: unknown argument; did you mean 'kernel_size'\? "
            r"\(expected one of: out_channels, kernel_size, ",
        ),
        ([{"conv2d": {"out_channels": 4}}], r"^model\.layers\[0\]\.conv2d\.kernel_size: required key is missing"),
        (
            [{"conv2d": {"out_channels": 4, "kernel_size": "abc"}}],
            r"^model\.layers\[0\]\.conv2d\.kernel_size: expected int or tuple\[int, int\] \(got 'abc'\)$",
        ),
        (
            [{"conv2d": {"out_channels": 4, "kernel_size": [3, "a"]}}],
            r"^model\.layers\[0\]\.conv2d\.kernel_size\[1\]: input should be a valid integer",
        ),
        (
            [{"conv2d": {"out_channels": 4, "kernel_size": 3, "padding": "sme"}}],
            r"^model\.layers\[0\]\.conv2d\.padding: expected int or tuple\[int, int\] or 'same' or 'valid'",
        ),
        (
            [{"relu": {"inplace": True}}],
            r"^model\.layers\[0\]\.relu\.inplace: unknown argument \(the block takes none\)",
        ),
        (
            [{"lstm": {"hidden_size": 4, "last_step": "maybe"}}],
            r"^model\.layers\[0\]\.lstm\.last_step: input should be",
        ),
    ],
)
def test_check_layers_without_data(layers: list[Any], message: str) -> None:
    """What `torchport validate` can say before any data is loaded."""
    with pytest.raises(ConfigError, match=message) as raised:
        check_layers(layers)
    assert "\n" not in str(raised.value)
    assert ".int" not in str(raised.value), "pydantic's union tags are not keys the user wrote"


def test_check_layers_accepts_classes_before_the_data_is_known() -> None:
    check_layers(digits_layers("digits"))


def test_parse_layers_keeps_config_indices() -> None:
    specs = parse_layers(["relu", {"residual": ["tanh"]}, {"linear": {"out_features": 2}}])
    assert [spec.path for spec in specs] == [
        "model.layers[0].relu",
        "model.layers[1].residual",
        "model.layers[2].linear",
    ]
    assert specs[1].children[0].path == "model.layers[1].residual[0].tanh"
    assert layer_names(["relu", "flatten"]) == ["model.layers[0] (relu)", "model.layers[1] (flatten)"]


# --- modularity: adding a pooling layer is one line of YAML ---------------------------------------------------


def test_digits_and_digits_pool_differ_by_one_pooling_line() -> None:
    plain, pooled = digits_layers("digits"), digits_layers("digits_pool")
    assert len(pooled) == len(plain) + 1
    extra = next(entry for index, entry in enumerate(pooled) if index >= len(plain) or entry != plain[index])
    position = pooled.index(extra)
    assert extra == {"maxpool2d": {"kernel_size": 2}}
    assert pooled[:position] + pooled[position + 1 :] == plain


@pytest.mark.parametrize("name", ["digits", "digits_pool"])
def test_two_conv_three_linear_network_builds_trains_and_is_plain(name: str, tmp_path: Path) -> None:
    layers = digits_layers(name)
    kinds = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in layers]
    assert kinds.count("conv2d") == 2 and kinds.count("linear") == 3

    torch.manual_seed(0)
    model = build_model(model_spec(layers, DIGITS_SHAPE, num_outputs=10))
    x = torch.rand(5, *DIGITS_SHAPE) * 16
    logits = model(x)
    assert logits.shape == (5, 10)
    torch.nn.functional.cross_entropy(logits, torch.arange(5)).backward()
    assert all(p.grad is not None for p in model.parameters())

    first_linear = model.layers[kinds.index("linear")]
    assert first_linear.in_features == (32 * 4 * 4 if name == "digits_pool" else 32 * 8 * 8)

    _assert_plain_module(model)

    # The weights round-trip through a state dict alone: no torchport object is needed to load them.
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    rebuilt = build_model(model_spec(layers, DIGITS_SHAPE, num_outputs=10))
    rebuilt.load_state_dict(state)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def _assert_plain_module(model: nn.Module) -> None:
    """No config objects inside: every attribute of every submodule is torch, a plain value, or a container."""
    config_types: tuple[type, ...] = (BaseModel, LayerSpec, ModelSpec, Path)
    for module_name, module in model.named_modules():
        assert isinstance(module, nn.Module)
        for attribute, value in vars(module).items():
            values = value.values() if isinstance(value, dict) else [value]
            for item in values:
                assert not isinstance(item, config_types), f"{module_name}.{attribute} holds {type(item).__name__}"
                assert not dataclasses.is_dataclass(item), f"{module_name}.{attribute} holds a dataclass"
    assert set(model.state_dict()) >= {"normalize.mean", "normalize.std", "layers.0.weight"}


def test_state_dict_keys_follow_config_indices() -> None:
    layers = digits_layers("digits")
    state = build_model(model_spec(layers, DIGITS_SHAPE, num_outputs=10)).state_dict()
    weighted = sorted({int(key.split(".")[1]) for key in state if key.startswith("layers.")})
    expected = [i for i, entry in enumerate(layers) if isinstance(entry, dict)]
    assert weighted == expected  # conv2d and linear entries, at the indices the YAML gives them
