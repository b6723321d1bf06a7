"""Mixed precision: the forward pass and loss under autocast, and (fp16 only) a GradScaler around backward/step.

fp32 runs as it always did (no autocast, no scaler), so its weights stay bitwise what they were. bf16 has fp32's
exponent range and needs no loss scaling, on CPU and CUDA alike; fp16 would underflow small gradients without a
scaler, and CPU autocast has no fp16 worth using, so it is CUDA only. The weights and optimizer state stay fp32
(autocast only casts inside ops), so checkpoints and export do not change with the precision.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from torchport.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    name: str  # fp32, bf16 or fp16
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=DTYPES[self.name])

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before gradient clipping: the clip threshold is in the gradients' true units."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step; with a scaler, skipped when the scaled gradients overflowed, and the scale updated."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def make_precision(name: str, device: torch.device) -> Precision:
    """``train.precision`` on ``device``; fp16 anywhere but CUDA is refused with one line."""
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision: fp16 needs a CUDA device (this run trains on {device.type}); use bf16 on CPU, or fp32"
        )
    scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None
    return Precision(name, device.type, scaler)
