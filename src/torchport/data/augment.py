"""Training-time image augmentation from ``data.augment``: torchvision transforms v2, named in the config.

``data.augment: [{random_crop: {size: 32, padding: 4}}, {horizontal_flip: {p: 0.5}}]`` becomes one
``Augment`` that the training loader applies to each sample of a batch. Only training batches are augmented:
validation, golden data and the exported graph see raw inputs, so export parity is untouched.

Randomness never comes from the global RNG (a resumed run would not replay it): each sample's transforms draw
from a seed made of (run seed, epoch, sample index), inside ``torch.random.fork_rng`` so the global stream —
dropout, the model's own randomness — is left exactly where it was. Same seed, epoch and index: same pixels,
whether the run was resumed, and whichever worker process drew it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchport.errors import ConfigError, DataError, first_line
from torchport.registry import Registry

AUGMENTS: Registry[Callable[..., Any]] = Registry("augmentation")  # torchvision.transforms.v2 classes
for _name, _cls in {
    "random_crop": "RandomCrop",
    "random_resized_crop": "RandomResizedCrop",
    "horizontal_flip": "RandomHorizontalFlip",
    "vertical_flip": "RandomVerticalFlip",
    "rotation": "RandomRotation",
    "affine": "RandomAffine",
    "color_jitter": "ColorJitter",
    "grayscale": "RandomGrayscale",
    "gaussian_blur": "GaussianBlur",
    "erasing": "RandomErasing",
}.items():
    AUGMENTS.register_lazy(_name, f"torchvision.transforms.v2:{_cls}")


@dataclass(frozen=True)
class Augment:
    """Transforms applied in order to one image (C, H, W) of raw 0..255 pixels; keeps its shape."""

    transforms: tuple[Callable[[torch.Tensor], torch.Tensor], ...]
    seed: int

    def sample_seed(self, epoch: int, index: int) -> int:
        return _mix(self.seed, epoch, index)

    def batch(self, inputs: torch.Tensor, epoch: int, indices: Sequence[int]) -> torch.Tensor:
        """``inputs`` (B, C, H, W) float 0..255 for samples ``indices`` of ``epoch``: augmented copies."""
        # uint8 tells torchvision the value range is 0..255 (float images are taken to be 0..1).
        pixels = inputs.round().clamp(0, 255).to(torch.uint8)
        out = torch.empty_like(pixels)
        # fork_rng(devices=[]) restores the CPU generator afterwards; seeding the default generator alone is
        # ~70x cheaper than torch.manual_seed, which also seeds every accelerator.
        with torch.random.fork_rng(devices=[]):
            for row, index in enumerate(indices):
                torch.default_generator.manual_seed(self.sample_seed(epoch, index))
                out[row] = self.one(pixels[row])
        return out.to(inputs.dtype)

    def one(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 image (C, H, W) through every transform."""
        out = image
        for transform in self.transforms:
            out = transform(out)
        if out.shape != image.shape:
            raise DataError(
                f"data.augment: turns images of shape {tuple(image.shape)} into {tuple(out.shape)}; "
                "augmentation must keep the shape (e.g. random_crop with size equal to the image and padding)"
            )
        return out


MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 over each in turn): nearby (epoch, index) pairs seed far apart."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = ((state ^ (value & MASK64)) + 0x9E3779B97F4A7C15) & MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & MASK64
        state ^= state >> 31
    return state >> 1


def build_augment(entries: Sequence[Any], seed: int, input_shape: Sequence[int] | None = None) -> Augment | None:
    """``data.augment`` as an ``Augment`` (None when empty); one line naming ``data.augment[i]`` on bad input."""
    if not entries:
        return None
    if input_shape is not None and len(input_shape) != 3:
        raise DataError(
            f"data.augment: augmentation is for images (C, H, W), but samples have shape {tuple(input_shape)}"
        )
    return Augment(tuple(_transform(entry, f"data.augment[{i}]") for i, entry in enumerate(entries)), seed)


def _transform(entry: Any, where: str) -> Callable[[torch.Tensor], torch.Tensor]:
    name, args = _parse(entry, where)
    try:
        factory = AUGMENTS.get(name, where=where)
    except ConfigError as exc:  # an unknown name, or torchvision not installed
        raise DataError(str(exc)) from None
    try:
        transform: Callable[[torch.Tensor], torch.Tensor] = factory(**args)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}.{name}: {first_line(exc, type(exc).__name__)}") from None
    return transform


def _parse(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise DataError(f"{where}: expected a name (e.g. horizontal_flip) or {{name: {{arguments}}}}, got {entry!r}")
    name, args = next(iter(entry.items()))
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise DataError(f"{where}.{name}: expected a mapping of arguments, got {args!r}")
    return str(name), dict(args)
