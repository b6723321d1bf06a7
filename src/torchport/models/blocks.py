"""The built-in blocks.

Each block is a factory with flat, typed keyword arguments (the types are what the config is validated
against) that returns a plain ``nn.Module``. ``in_shape`` is the shape of one sample flowing into the block
(no batch dimension); compose.py passes it, so users never type ``in_channels`` or ``in_features``.
Every block keeps the batch as dimension 0 and treats sequences as (batch, length, features).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from torchport.registry import register_block

Shape = tuple[int, ...]
IntOrPair = int | tuple[int, int]


# --- small modules the factories need ------------------------------------------------------------------------


class Reshape(nn.Module):
    """Reshape each sample; the batch dimension is untouched."""

    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class Permute(nn.Module):
    """Permute the sample dimensions (0-based, batch excluded); the batch stays first."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = (0, *(d + 1 for d in dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)


class Recurrent(nn.Module):
    """An LSTM or GRU over (batch, length, features) that returns the outputs, or only the last step's."""

    def __init__(self, rnn: nn.LSTM | nn.GRU, last_step: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.last_step = last_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(x)  # (batch, length, directions * hidden)
        if not self.last_step:
            return outputs
        if not self.rnn.bidirectional:
            return outputs[:, -1]
        # The backward direction reads the sequence from the end, so its summary of the whole sequence is at
        # step 0; at step -1 it has seen one element. Both summaries, like the final hidden state h_n.
        hidden = self.rnn.hidden_size
        return torch.cat([outputs[:, -1, :hidden], outputs[:, 0, hidden:]], dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention (query = key = value = input); returns the attended sequence."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, bias=bias, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, need_weights=False)
        return attended


class TokenEmbedding(nn.Embedding):
    """An embedding that accepts token ids stored as floats too (data sources yield float32 by default)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.long())


class Residual(nn.Module):
    """``x + body(x)``: the body must keep the shape."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# --- convolution and pooling ---------------------------------------------------------------------------------


@register_block("conv1d")
def conv1d(
    in_shape: Shape,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | Literal["same", "valid"] = 0,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = True,
) -> nn.Module:
    """1-D convolution over (channels, length)."""
    return nn.Conv1d(in_shape[0], out_channels, kernel_size, stride, padding, dilation, groups, bias)


@register_block("conv2d")
def conv2d(
    in_shape: Shape,
    out_channels: int,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair | Literal["same", "valid"] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    bias: bool = True,
) -> nn.Module:
    """2-D convolution over (channels, height, width)."""
    return nn.Conv2d(in_shape[0], out_channels, kernel_size, stride, padding, dilation, groups, bias)


@register_block("maxpool1d")
def maxpool1d(kernel_size: int, stride: int | None = None, padding: int = 0) -> nn.Module:
    """Max pooling over length."""
    return nn.MaxPool1d(kernel_size, stride, padding)


@register_block("maxpool2d")
def maxpool2d(kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0) -> nn.Module:
    """Max pooling over height and width."""
    return nn.MaxPool2d(kernel_size, stride, padding)


@register_block("avgpool1d")
def avgpool1d(kernel_size: int, stride: int | None = None, padding: int = 0) -> nn.Module:
    """Average pooling over length."""
    return nn.AvgPool1d(kernel_size, stride if stride is not None else kernel_size, padding)


@register_block("avgpool2d")
def avgpool2d(kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0) -> nn.Module:
    """Average pooling over height and width."""
    return nn.AvgPool2d(kernel_size, stride, padding)


@register_block("adaptive_avgpool1d")
def adaptive_avgpool1d(output_size: int = 1) -> nn.Module:
    """Average pooling to a fixed length (1 = global average)."""
    return nn.AdaptiveAvgPool1d(output_size)


@register_block("adaptive_avgpool2d")
def adaptive_avgpool2d(output_size: IntOrPair = 1) -> nn.Module:
    """Average pooling to a fixed height and width (1 = global average)."""
    return nn.AdaptiveAvgPool2d(output_size)


# --- normalisation and regularisation ------------------------------------------------------------------------


@register_block("batchnorm1d")
def batchnorm1d(in_shape: Shape, eps: float = 1e-5, momentum: float = 0.1) -> nn.Module:
    """Batch norm over (features,) or (channels, length)."""
    return nn.BatchNorm1d(in_shape[0], eps=eps, momentum=momentum)


@register_block("batchnorm2d")
def batchnorm2d(in_shape: Shape, eps: float = 1e-5, momentum: float = 0.1) -> nn.Module:
    """Batch norm over (channels, height, width)."""
    return nn.BatchNorm2d(in_shape[0], eps=eps, momentum=momentum)


@register_block("layernorm")
def layernorm(in_shape: Shape, eps: float = 1e-5, elementwise_affine: bool = True) -> nn.Module:
    """Layer norm over the last dimension."""
    return nn.LayerNorm(in_shape[-1], eps=eps, elementwise_affine=elementwise_affine)


@register_block("dropout")
def dropout(p: float = 0.5) -> nn.Module:
    """Zero a fraction ``p`` of activations while training."""
    return nn.Dropout(p)


# --- shape ---------------------------------------------------------------------------------------------------


@register_block("flatten")
def flatten() -> nn.Module:
    """Flatten each sample to a vector."""
    return nn.Flatten()


@register_block("reshape")
def reshape(shape: list[int]) -> nn.Module:
    """Reshape each sample (one -1 allowed); the batch dimension is untouched."""
    return Reshape(shape)


@register_block("permute")
def permute(dims: list[int]) -> nn.Module:
    """Reorder the sample dimensions, e.g. [1, 0] turns (channels, length) into (length, channels)."""
    return Permute(dims)


# --- dense, embedding, recurrent, attention ------------------------------------------------------------------


@register_block("linear")
def linear(in_shape: Shape, out_features: int, bias: bool = True) -> nn.Module:
    """A dense layer on the last dimension; ``out_features: classes`` takes the number of classes."""
    return nn.Linear(in_shape[-1], out_features, bias)


@register_block("embedding")
def embedding(num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> nn.Module:
    """Token ids (length,) -> vectors (length, embedding_dim)."""
    return TokenEmbedding(num_embeddings, embedding_dim, padding_idx=padding_idx)


def _rnn_kwargs(hidden_size: int, num_layers: int, bidirectional: bool, dropout: float) -> dict[str, object]:
    return {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "dropout": dropout if num_layers > 1 else 0.0,
        "batch_first": True,
    }


@register_block("lstm")
def lstm(
    in_shape: Shape,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    last_step: bool = False,
) -> nn.Module:
    """LSTM over (length, features); ``last_step: true`` returns only the final step's output."""
    rnn = nn.LSTM(in_shape[-1], **_rnn_kwargs(hidden_size, num_layers, bidirectional, dropout))
    return Recurrent(rnn, last_step)


@register_block("gru")
def gru(
    in_shape: Shape,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    last_step: bool = False,
) -> nn.Module:
    """GRU over (length, features); ``last_step: true`` returns only the final step's output."""
    rnn = nn.GRU(in_shape[-1], **_rnn_kwargs(hidden_size, num_layers, bidirectional, dropout))
    return Recurrent(rnn, last_step)


@register_block("self_attention")
def self_attention(in_shape: Shape, num_heads: int = 1, dropout: float = 0.0, bias: bool = True) -> nn.Module:
    """Multi-head self-attention over (length, features)."""
    return SelfAttention(in_shape[-1], num_heads, dropout, bias)


@register_block("transformer_encoder_layer")
def transformer_encoder_layer(
    in_shape: Shape,
    nhead: int = 1,
    dim_feedforward: int | None = None,
    dropout: float = 0.1,
    activation: Literal["relu", "gelu"] = "relu",
    norm_first: bool = False,
) -> nn.Module:
    """A transformer encoder layer over (length, features); feed-forward width defaults to 4 x features."""
    d_model = in_shape[-1]
    return nn.TransformerEncoderLayer(
        d_model,
        nhead,
        dim_feedforward or 4 * d_model,
        dropout,
        activation,
        batch_first=True,
        norm_first=norm_first,
    )


# --- activations ---------------------------------------------------------------------------------------------


@register_block("relu")
def relu() -> nn.Module:
    """max(x, 0)."""
    return nn.ReLU()


@register_block("gelu")
def gelu(approximate: Literal["none", "tanh"] = "none") -> nn.Module:
    """Gaussian error linear unit."""
    return nn.GELU(approximate)


@register_block("silu")
def silu() -> nn.Module:
    """x * sigmoid(x)."""
    return nn.SiLU()


@register_block("tanh")
def tanh() -> nn.Module:
    """Hyperbolic tangent."""
    return nn.Tanh()


@register_block("sigmoid")
def sigmoid() -> nn.Module:
    """Logistic function."""
    return nn.Sigmoid()


@register_block("softmax")
def softmax(dim: int = -1) -> nn.Module:
    """Softmax over a sample dimension (default the last)."""
    return nn.Softmax(dim if dim < 0 else dim + 1)
