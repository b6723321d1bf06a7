"""A user's own block, in the user's own file: torchport imports it by path (``my_blocks:MixedPool``).

Nothing here knows about torchport. A block is a plain ``nn.Module``; constructor arguments named
``in_channels`` (or ``in_features``, ``num_features``, ``in_shape``, ...) are filled in from the shape of the
data flowing into it, and the other arguments come from the YAML.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MixedPool(nn.Module):
    """Mixed pooling: a learned per-channel blend of max and average pooling over (channels, height, width).

    ``gate = sigmoid(w)`` per channel decides how much of the max (1) or the average (0) to keep, so the
    network learns which channels want sharp and which want smooth downsampling. It starts at an even mix.
    """

    def __init__(self, in_channels: int, kernel_size: int = 2, stride: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size
        self.gate_logit = nn.Parameter(torch.zeros(1, in_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, channels, height, width) -> (batch, channels, height // stride, width // stride)
        gate = torch.sigmoid(self.gate_logit)
        peak = F.max_pool2d(x, self.kernel_size, self.stride)
        mean = F.avg_pool2d(x, self.kernel_size, self.stride)
        return gate * peak + (1 - gate) * mean
