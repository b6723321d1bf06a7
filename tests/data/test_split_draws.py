"""The split's own draws against scikit-learn's ``train_test_split``, which every earlier run's split came from:
the same samples, in the same order, over many sizes, class balances, ties and seeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from torchport.data.split_draws import class_shares, class_sizes, shuffled_split, stratified_split

from .builders import write_csv


def _cases(count: int) -> list[tuple[np.ndarray, int, int]]:
    """(labels, n_take, seed): balanced classes (tied remainders), skewed ones, two classes to a dozen."""
    rng = np.random.default_rng(2026)
    cases = []
    for _ in range(count):
        classes = int(rng.integers(2, 13))
        balanced = rng.random() < 0.5
        sizes = np.full(classes, int(rng.integers(2, 40))) if balanced else rng.integers(2, 400, classes)
        labels = rng.permutation(np.repeat(np.arange(classes) * 3 + 1, sizes)).astype(np.int64)
        n_take = int(rng.integers(classes, len(labels) - classes + 1))
        seed = int(rng.choice([0, 1, 42, 2**32 - 1, int(rng.integers(0, 2**32))]))
        cases.append((labels, n_take, seed))
    return cases


@pytest.mark.parametrize("case", range(4))
def test_stratified_split_takes_what_scikit_learn_takes(case: int) -> None:
    for labels, n_take, seed in _cases(400)[case * 100 : (case + 1) * 100]:
        positions = np.arange(len(labels))
        expected = train_test_split(positions, test_size=n_take, random_state=seed, stratify=labels)
        kept, taken = stratified_split(labels, class_sizes(labels), n_take, seed)
        np.testing.assert_array_equal(kept, expected[0])
        np.testing.assert_array_equal(taken, expected[1])


def test_unstratified_split_takes_what_scikit_learn_takes() -> None:
    for labels, n_take, seed in _cases(100):
        expected = train_test_split(np.arange(len(labels)), test_size=n_take, random_state=seed)
        kept, taken = shuffled_split(len(labels), n_take, seed)
        np.testing.assert_array_equal(kept, expected[0])
        np.testing.assert_array_equal(taken, expected[1])


def test_the_draws_stay_those_of_scikit_learn_1_9() -> None:
    """Pinned, so that a scikit-learn that changes its algorithm cannot make the comparisons above pass on new
    draws: these are scikit-learn 1.9.1's, the draws every run so far was split with."""
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 5, 5], dtype=np.int64)
    kept, taken = stratified_split(labels, class_sizes(labels), 5, seed=7)
    assert (kept.tolist(), taken.tolist()) == ([4, 7, 11, 8, 3, 1, 2], [5, 6, 9, 0, 10])
    kept, taken = shuffled_split(10, 3, seed=42)
    assert (kept.tolist(), taken.tolist()) == ([0, 7, 2, 9, 4, 3, 6], [8, 1, 5])


def test_class_shares_add_up_and_stay_proportional() -> None:
    sizes = np.array([50, 30, 20, 1])
    shares = class_shares(sizes, 10, np.random.RandomState(0))
    assert shares.sum() == 10
    np.testing.assert_array_equal(shares[:3], [5, 3, 2])


def test_loading_a_table_does_not_import_scikit_learn(tmp_path: Path) -> None:
    """scikit-learn costs a training process 78 MiB: only the bundled datasets, which it ships, may import it."""
    config = write_csv(tmp_path)
    code = (
        "import sys\n"
        "from torchport.config import DataConfig\n"
        "from torchport.data import load_data\n"
        f"data = load_data(DataConfig.model_validate({config.model_dump(mode='json')!r}), 0)\n"
        "assert len(data.train) > 0\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'sklearn'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
