"""data.augment: torchvision v2 transforms on training batches, reproducible from (seed, epoch, sample index)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (a core dependency: a broken install fails here, never skips)

from torchport.data.augment import AUGMENTS, build_augment
from torchport.data.loaders import batch_loader
from torchport.data.splits import Split
from torchport.errors import DataError
from torchport.train.sampling import EpochBatchSampler

AUGMENT = [
    {"random_crop": {"size": 16, "padding": 4}},
    {"horizontal_flip": {"p": 0.5}},
    {"color_jitter": {"brightness": 0.4}},
]


def images(n: int = 12) -> Split:
    """Raw 0..255 pixels, every image different, so crops and flips show."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 3, 16, 16)).astype(np.float32)
    return Split(x, np.arange(n, dtype=np.int64) % 2)


def epochs(
    split: Split, seed: int, augment: list[object] | None, num_workers: int = 0, n: int = 2
) -> list[torch.Tensor]:
    """Every training batch of ``n`` epochs, in order, as the loop draws them."""
    sampler = EpochBatchSampler(len(split), 4, seed)
    built = build_augment(augment, seed) if augment else None
    loader = batch_loader(split, sampler, num_workers, seed, built)
    out = []
    for epoch in range(n):
        sampler.set_epoch(epoch)
        out += [inputs.clone() for inputs, _ in loader]
    return out


def test_augmented_batches_differ_from_raw_and_repeat_with_the_seed() -> None:
    split = images()
    raw, first, second = epochs(split, 0, None), epochs(split, 0, AUGMENT), epochs(split, 0, AUGMENT)
    assert all(a.shape == r.shape and a.dtype == torch.float32 for a, r in zip(first, raw, strict=True))
    assert all(not torch.equal(a, r) for a, r in zip(first, raw, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(torch.cat(first), torch.cat(epochs(split, 1, AUGMENT)))  # another seed, other draws
    assert float(torch.cat(first).min()) >= 0 and float(torch.cat(first).max()) <= 255  # still raw pixels


def test_each_epoch_draws_afresh_for_the_same_sample() -> None:
    augment = build_augment(AUGMENT, seed=0)
    assert augment is not None
    image = torch.as_tensor(images().x[:1])
    assert not torch.equal(augment.batch(image, 0, [3]), augment.batch(image, 1, [3]))
    assert torch.equal(augment.batch(image, 1, [3]), augment.batch(image, 1, [3]))


def test_resume_mid_epoch_sees_the_same_augmented_batches_and_global_rng_is_untouched() -> None:
    """What exact resume needs: a batch depends only on (seed, epoch, indices), not on what ran before it."""
    split = images()
    augment = build_augment(AUGMENT, seed=0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    sampler = EpochBatchSampler(len(split), 4, 0)
    sampler.set_epoch(1)
    whole = [x.clone() for x, _ in batch_loader(split, sampler, 0, 0, augment)]
    assert torch.equal(torch.get_rng_state(), before)  # dropout's stream is where it was
    sampler.set_epoch(1, skip=1)  # as after a SIGKILL past the first batch of epoch 1
    resumed = [x.clone() for x, _ in batch_loader(split, sampler, 0, 0, augment)]
    assert len(resumed) == len(whole) - 1
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole[1:], strict=True))


def test_worker_processes_augment_as_the_main_process_does() -> None:
    split = images(8)
    assert all(torch.equal(a, b) for a, b in zip(epochs(split, 0, AUGMENT), epochs(split, 0, AUGMENT, 1), strict=True))


def test_no_augment_leaves_batches_raw() -> None:
    split = images()
    assert build_augment([], seed=0) is None
    batches = epochs(split, 0, None, n=1)
    sampler = EpochBatchSampler(len(split), 4, 0)
    order = [i for batch in sampler for i in batch]
    assert torch.equal(torch.cat(batches), torch.as_tensor(split.x[order]))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [{"horizontal_flip": {}}, {"random_crap": {"size": 8}}],
            r"^data\.augment\[1\]: unknown augmentation 'random_crap'; did you mean 'random_crop'",
        ),
        ([{"random_crop": {"sise": 8}}], r"^data\.augment\[0\]\.random_crop: .*sise"),
        (["horizontal_flip", 3], r"^data\.augment\[1\]: expected a name"),
        ([{"color_jitter": [0.2]}], r"^data\.augment\[0\]\.color_jitter: expected a mapping"),
    ],
)
def test_bad_augment_entries_name_the_key(entries: list[object], message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        build_augment(entries, seed=0)
    assert "\n" not in str(info.value)


def test_a_shape_changing_augment_is_refused_and_non_images_too() -> None:
    augment = build_augment([{"random_crop": {"size": 8}}], seed=0)
    assert augment is not None
    with pytest.raises(DataError, match=r"^data\.augment: turns images of shape \(3, 16, 16\) into \(3, 8, 8\)"):
        augment.batch(torch.as_tensor(images(1).x), 0, [0])
    with pytest.raises(DataError, match=r"^data\.augment: augmentation is for images"):
        build_augment(["horizontal_flip"], seed=0, input_shape=(4,))


@pytest.mark.parametrize("name", AUGMENTS.names())
def test_every_registered_augmentation_resolves_to_a_transform(name: str) -> None:
    required = {
        "random_crop": {"size": 16, "padding": 2},
        "random_resized_crop": {"size": 16},
        "rotation": {"degrees": 10},
        "affine": {"degrees": 10},
        "gaussian_blur": {"kernel_size": 3},
    }
    augment = build_augment([{name: required.get(name, {})}], seed=0)
    assert augment is not None
    out = augment.batch(torch.as_tensor(images(2).x), 0, [0, 1])
    assert out.shape == (2, 3, 16, 16)
