"""Write shapes/, the small image folder used by examples/images_resnet.yaml.

Run once (``python examples/data/make_shapes.py``); it is deterministic, so running it again draws the same
pixels. Each 32x32 RGB PNG holds one filled shape (circle, square or triangle) of random size, place and colour
on a noisy background of another colour, in ``shapes/<shape>/<n>.png``: the layout ``source: image_folder`` reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32
PER_CLASS = 80
CLASSES = ("circle", "square", "triangle")
ROOT = Path(__file__).resolve().parent / "shapes"


def draw(shape: str, rng: np.random.Generator) -> Image.Image:
    """One image: background noise, then the shape in a colour far from the background's."""
    background = rng.integers(0, 120, size=3)
    noise = rng.integers(-20, 21, size=(SIZE, SIZE, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    colour = tuple(int(c) for c in rng.integers(140, 256, size=3))
    half = int(rng.integers(8, 14))  # half the shape's width: 16 to 26 pixels across
    cx, cy = (int(c) for c in rng.integers(half + 1, SIZE - half - 1, size=2))
    box = (cx - half, cy - half, cx + half, cy + half)
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=colour)
    return image


def make_images(per_class: int = PER_CLASS, seed: int = 11) -> dict[str, list[Image.Image]]:
    rng = np.random.default_rng(seed)
    return {shape: [draw(shape, rng) for _ in range(per_class)] for shape in CLASSES}


def write(root: Path = ROOT, per_class: int = PER_CLASS) -> None:
    for shape, images in make_images(per_class).items():
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            image.save(folder / f"{index:03d}.png", optimize=True)


if __name__ == "__main__":
    write()
    print(f"wrote {len(CLASSES) * PER_CLASS} images to {ROOT}")
