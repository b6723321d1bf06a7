"""Every registered block composes into a model that runs forward and backward.

``CASES`` is keyed by block name and the tests enumerate the registry, so a block registered without an entry
here fails ``test_block_forward_backward[<name>-MISSING]``: a new block is tested the moment it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from torchport.errors import ConfigError
from torchport.models.compose import RESIDUAL, build_model, parse_layer
from torchport.registry import BLOCKS

from .helpers import CLASSES, model_spec


@dataclass(frozen=True)
class Case:
    """One ``model.layers`` entry, the shape of one sample going in, and the shape the block hands on."""

    entry: Any
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    input_dtype: str = "float32"
    id: str = ""


def _simple(name: str, shape: tuple[int, ...] = (6,)) -> list[Case]:
    """A block that keeps the shape and takes no required arguments."""
    return [Case(name, shape, shape)]


CASES: dict[str, list[Case]] = {
    "conv1d": [
        Case({"conv1d": {"out_channels": 4, "kernel_size": 3}}, (2, 10), (4, 8)),
        Case({"conv1d": {"out_channels": 4, "kernel_size": 3, "padding": "same"}}, (2, 10), (4, 10), id="same"),
    ],
    "conv2d": [
        Case({"conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1}}, (3, 8, 8), (4, 8, 8)),
        Case({"conv2d": {"out_channels": 2, "kernel_size": [3, 1], "stride": 2}}, (1, 8, 8), (2, 3, 4), id="pair"),
    ],
    "maxpool1d": [Case({"maxpool1d": {"kernel_size": 2}}, (2, 10), (2, 5))],
    "maxpool2d": [Case({"maxpool2d": {"kernel_size": 2}}, (1, 8, 8), (1, 4, 4))],
    "avgpool1d": [Case({"avgpool1d": {"kernel_size": 2}}, (2, 10), (2, 5))],
    "avgpool2d": [Case({"avgpool2d": {"kernel_size": [2, 4]}}, (3, 8, 8), (3, 4, 2))],
    "adaptive_avgpool1d": [
        Case("adaptive_avgpool1d", (2, 10), (2, 1)),
        Case({"adaptive_avgpool1d": {"output_size": 3}}, (2, 10), (2, 3), id="size3"),
    ],
    "adaptive_avgpool2d": [Case("adaptive_avgpool2d", (3, 8, 8), (3, 1, 1))],
    "batchnorm1d": [
        Case("batchnorm1d", (6,), (6,), id="features"),
        Case("batchnorm1d", (3, 10), (3, 10), id="channels"),
    ],
    "batchnorm2d": [Case("batchnorm2d", (3, 4, 4), (3, 4, 4))],
    "layernorm": [Case("layernorm", (5, 6), (5, 6))],
    "dropout": [Case({"dropout": {"p": 0.2}}, (6,), (6,))],
    "flatten": [Case("flatten", (2, 3, 4), (24,))],
    "reshape": [
        Case({"reshape": {"shape": [3, 4]}}, (12,), (3, 4)),
        Case({"reshape": {"shape": [-1, 2]}}, (3, 4), (6, 2), id="infer"),
    ],
    "permute": [Case({"permute": {"dims": [1, 0]}}, (2, 5), (5, 2))],
    "linear": [
        Case({"linear": {"out_features": 4}}, (6,), (4,)),
        Case({"linear": {"out_features": "classes"}}, (6,), (CLASSES,), id="classes"),
        Case({"linear": {"out_features": 4, "bias": False}}, (5, 6), (5, 4), id="sequence"),
    ],
    "embedding": [
        Case({"embedding": {"num_embeddings": 20, "embedding_dim": 4}}, (7,), (7, 4), input_dtype="int64"),
    ],
    "lstm": [
        Case({"lstm": {"hidden_size": 4}}, (5, 3), (5, 4), id="sequence"),
        Case({"lstm": {"hidden_size": 4, "last_step": True}}, (5, 3), (4,), id="last_step"),
        Case({"lstm": {"hidden_size": 4, "bidirectional": True, "num_layers": 2}}, (5, 3), (5, 8), id="bi"),
        Case({"lstm": {"hidden_size": 4, "bidirectional": True, "last_step": True}}, (5, 3), (8,), id="bi-last"),
    ],
    "gru": [
        Case({"gru": {"hidden_size": 4}}, (5, 3), (5, 4), id="sequence"),
        Case({"gru": {"hidden_size": 4, "last_step": True}}, (5, 3), (4,), id="last_step"),
        Case({"gru": {"hidden_size": 4, "bidirectional": True, "last_step": True}}, (5, 3), (8,), id="bi-last"),
    ],
    "self_attention": [Case({"self_attention": {"num_heads": 2}}, (5, 4), (5, 4))],
    "transformer_encoder_layer": [
        Case({"transformer_encoder_layer": {"nhead": 2}}, (5, 4), (5, 4)),
        Case(
            {"transformer_encoder_layer": {"nhead": 1, "dim_feedforward": 8, "activation": "gelu", "norm_first": True}},
            (5, 4),
            (5, 4),
            id="gelu",
        ),
    ],
    "relu": _simple("relu"),
    "gelu": [*_simple("gelu"), Case({"gelu": {"approximate": "tanh"}}, (6,), (6,), id="tanh")],
    "silu": _simple("silu"),
    "tanh": _simple("tanh"),
    "sigmoid": _simple("sigmoid"),
    "softmax": [Case("softmax", (6,), (6,)), Case({"softmax": {"dim": 0}}, (3, 4), (3, 4), id="dim0")],
    RESIDUAL: [
        Case({RESIDUAL: [{"linear": {"out_features": 6}}, "relu"]}, (6,), (6,)),
        Case(
            {RESIDUAL: [{"conv2d": {"out_channels": 2, "kernel_size": 3, "padding": 1}}]},
            (2, 4, 4),
            (2, 4, 4),
            id="conv",
        ),
    ],
}

BATCH = 4


def _params() -> list[Any]:
    params = []
    for name in [*BLOCKS.names(), RESIDUAL]:
        cases = CASES.get(name)
        if not cases:
            params.append(pytest.param(name, None, id=f"{name}-MISSING"))
            continue
        params.extend(pytest.param(name, case, id=f"{name}-{case.id}" if case.id else name) for case in cases)
    return params


def sample(case: Case, batch: int = BATCH) -> torch.Tensor:
    if case.input_dtype == "int64":
        return torch.randint(0, 10, (batch, *case.in_shape))
    return torch.randn(batch, *case.in_shape)


@pytest.mark.parametrize(("name", "case"), _params())
def test_block_forward_backward(name: str, case: Case | None) -> None:
    if case is None:
        pytest.fail(f"block '{name}' is registered but has no entry in CASES of {__file__}; add one")
    assert parse_layer(case.entry, "model.layers[0]").name == name, "the case must use the block it is filed under"
    torch.manual_seed(0)
    layers = [case.entry, "flatten", {"linear": {"out_features": "classes"}}]
    model = build_model(model_spec(layers, case.in_shape, case.input_dtype))
    model.train()
    x = sample(case)
    floating = x.is_floating_point()
    if floating:
        x.requires_grad_(True)

    block = model.layers[0]
    assert block(model.normalize(x)).shape == (BATCH, *case.out_shape)
    logits = model(x)
    assert logits.shape == (BATCH, CLASSES)

    F.cross_entropy(logits, torch.arange(BATCH) % CLASSES).backward()
    for parameter_name, parameter in block.named_parameters():
        assert parameter.grad is not None, f"{name}: no gradient reached {parameter_name}"
        assert torch.isfinite(parameter.grad).all(), f"{name}: non-finite gradient in {parameter_name}"
    head = model.layers[-1]
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    if floating:  # the gradient flows back through the block to the input
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_cases_only_name_registered_blocks() -> None:
    stale = set(CASES) - {*BLOCKS.names(), RESIDUAL}
    assert not stale, f"CASES has entries for blocks that are not registered: {sorted(stale)}"


def test_blocks_keep_batch_first_with_batch_of_one() -> None:
    """A batch of one must not be folded into the sample (reshape [-1] would do that with x.reshape(-1))."""
    model = build_model(model_spec([{"reshape": {"shape": [-1]}}, {"linear": {"out_features": "classes"}}], (2, 3)))
    assert model(torch.randn(1, 2, 3)).shape == (1, CLASSES)


@pytest.mark.parametrize("batch", [1, 5])
def test_reshape_and_permute_leave_the_batch_untouched(batch: int) -> None:
    layers = [{"reshape": {"shape": [4, 3]}}, {"permute": {"dims": [1, 0]}}, "flatten", {"linear": {"out_features": 2}}]
    model = build_model(model_spec(layers, (12,), num_outputs=2))
    x = torch.randn(batch, 12)
    reshaped = model.layers[0](x)
    permuted = model.layers[1](reshaped)
    assert reshaped.shape == (batch, 4, 3)
    assert permuted.shape == (batch, 3, 4)
    for i in range(batch):  # each sample is transformed on its own; samples never mix
        torch.testing.assert_close(reshaped[i], x[i].reshape(4, 3))
        torch.testing.assert_close(permuted[i], x[i].reshape(4, 3).T)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_last_step_is_the_last_output(kind: str) -> None:
    def build(last_step: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        layers = [{kind: {"hidden_size": 4, "last_step": last_step}}, "flatten", {"linear": {"out_features": 2}}]
        return build_model(model_spec(layers, (5, 3), num_outputs=2)).eval()

    x = torch.randn(3, 5, 3)
    with torch.no_grad():
        everything = build(False).layers[0](x)
        last = build(True).layers[0](x)
    assert everything.shape == (3, 5, 4)
    torch.testing.assert_close(last, everything[:, -1])


def test_softmax_dim_counts_sample_dimensions() -> None:
    model = build_model(
        model_spec([{"softmax": {"dim": 0}}, "flatten", {"linear": {"out_features": 2}}], (3, 4), num_outputs=2)
    )
    probabilities = model.layers[0](torch.randn(2, 3, 4))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 4))


def test_residual_adds_its_input() -> None:
    model = build_model(
        model_spec(
            [{RESIDUAL: [{"linear": {"out_features": 6}}]}, {"linear": {"out_features": 2}}], (6,), num_outputs=2
        )
    )
    residual = model.layers[0]
    x = torch.randn(3, 6)
    torch.testing.assert_close(residual(x), x + residual.body(x))


def test_embedding_takes_token_ids_and_the_normalizer_leaves_them_alone() -> None:
    layers = [{"embedding": {"num_embeddings": 10, "embedding_dim": 4}}, "flatten", {"linear": {"out_features": 2}}]
    spec = model_spec(layers, (3,), "int64", num_outputs=2)
    model = build_model(spec)
    tokens = torch.tensor([[1, 2, 9], [0, 0, 0]])
    torch.testing.assert_close(model.normalize(tokens), tokens)
    torch.testing.assert_close(model.layers[0](tokens), model.layers[0].weight[tokens])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bidirectional_last_step_is_both_directions_final_state(kind: str) -> None:
    """Forward direction's state after the last step, backward direction's after the first: h_n of the last layer."""
    layers = [{kind: {"hidden_size": 4, "bidirectional": True, "num_layers": 2, "last_step": True}}]
    model = build_model(model_spec([*layers, {"linear": {"out_features": 2}}], (5, 3), num_outputs=2)).eval()
    block = model.layers[0]
    x = torch.randn(3, 5, 3)
    with torch.no_grad():
        summary = block(x)
        _, state = block.rnn(x)
    h_n = state[0] if kind == "lstm" else state
    torch.testing.assert_close(summary, torch.cat([h_n[-2], h_n[-1]], dim=-1))


def test_integer_input_keeps_its_dtype_through_the_dry_run() -> None:
    """Token ids through `flatten` are still integers: the dry run must see what the real forward sees."""
    ok = [{"reshape": {"shape": [-1]}}, {"embedding": {"num_embeddings": 10, "embedding_dim": 2}}, "flatten"]
    model = build_model(model_spec([*ok, {"linear": {"out_features": 2}}], (2, 3), "int64", num_outputs=2))
    assert model(torch.randint(0, 10, (4, 2, 3))).shape == (4, 2)

    no_embedding = ["flatten", {"linear": {"out_features": 2}}]
    with pytest.raises(ConfigError, match=r"^model\.layers\[1\]\.linear: does not accept .* start with `embedding`"):
        build_model(model_spec(no_embedding, (2, 3), "int64", num_outputs=2))
