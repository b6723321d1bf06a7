"""Which samples a split takes: scikit-learn's ``train_test_split`` draw for draw, with NumPy alone.

A run's split is a pure function of the data, the config and the seed, and every run made so far drew its split
with scikit-learn's ``train_test_split`` (``ShuffleSplit``, or ``StratifiedShuffleSplit`` when stratified). This
module makes the same draws, in the same order, from the same legacy ``RandomState``, so those runs keep their
splits; ``tests/data/test_split_draws.py`` compares the two over many shapes of data.

Why not keep calling scikit-learn: importing ``sklearn.model_selection`` costs a training process 78 MiB and 820
modules, and its stratified split gathers 2.2 M indices one NumPy scalar at a time in Python lists, 150 MiB more
for a moment. Both count against the peak memory of training on a table larger than memory. Pinning the draws
here also keeps a scikit-learn upgrade from moving any run's samples.
"""

from __future__ import annotations

import numpy as np


def shuffled_split(n: int, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (kept, taken) of ``n`` samples, ``n_take`` taken at random."""
    order = np.random.RandomState(seed).permutation(n)
    return order[n_take:], order[:n_take]


def class_sizes(labels: np.ndarray) -> np.ndarray:
    """Members of each class, in the order of the sorted labels."""
    return np.unique(labels, return_counts=True)[1]


def stratified_split(labels: np.ndarray, sizes: np.ndarray, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (kept, taken) with ``n_take`` taken and every class in its share on both sides; ``sizes`` is
    ``class_sizes(labels)``, which the caller has already needed to decide whether to stratify.

    The caller makes sure stratifying is possible: two members of every class, and at least one of every class
    on each side."""
    rng = np.random.RandomState(seed)
    kept_per_class = class_shares(sizes, len(labels) - n_take, rng)
    taken_per_class = class_shares(sizes - kept_per_class, n_take, rng)
    kept, taken = _drawn_per_class(labels, sizes, kept_per_class, taken_per_class, rng)
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(taken))


def _drawn_per_class(
    labels: np.ndarray, sizes: np.ndarray, kept: np.ndarray, taken: np.ndarray, rng: np.random.RandomState
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each class's members (in their original order: a stable sort by label, which orders them as scikit-learn's
    sort of class ids does), shuffled, then cut into its kept and its taken part. A function of its own so that
    the sorted positions are freed before the parts are joined."""
    members = np.split(np.argsort(labels, kind="stable"), np.cumsum(sizes)[:-1])
    kept_parts, taken_parts = [], []
    for positions, n_kept, n_taken in zip(members, kept, taken, strict=True):
        shuffled = positions[rng.permutation(len(positions))]
        kept_parts.append(shuffled[:n_kept])
        taken_parts.append(shuffled[n_kept : n_kept + n_taken])
    return kept_parts, taken_parts


def class_shares(sizes: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` each class gets: its proportional share rounded down, then one more for the classes
    with the largest remainders until ``draws`` are given out, a tie among remainders broken at random."""
    exact = sizes / sizes.sum() * draws
    shares = np.floor(exact)
    left = int(draws - shares.sum())
    remainders = exact - shares
    for remainder in np.unique(remainders)[::-1]:
        if left <= 0:
            break
        tied = np.flatnonzero(remainders == remainder)
        chosen = rng.choice(tied, size=min(len(tied), left), replace=False)
        shares[chosen] += 1
        left -= len(chosen)
    return shares.astype(int)
