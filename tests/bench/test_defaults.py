"""The benchmark's defaults live in bench/defaults.py; the CLI's options and the config's ``bench:`` section agree."""

from __future__ import annotations

from torchport.bench import defaults
from torchport.cli_parser import build_parser
from torchport.config import BenchConfig


def test_the_config_bench_section_defaults_to_the_bench_defaults() -> None:
    """config.py cannot import bench (it sits lower in the layers), so it holds copies: this keeps them equal."""
    settings = BenchConfig()
    assert tuple(settings.batch_sizes) == defaults.BATCH_SIZES
    assert tuple(settings.threads) == defaults.THREADS
    assert settings.budget_seconds == defaults.RUN_BUDGET_S
    assert settings.compile is defaults.COMPILE


def test_the_bench_verb_defaults_to_the_bench_defaults() -> None:
    args = build_parser().parse_args(["bench", "runs/x/bundle"])
    assert tuple(args.batch_sizes) == defaults.BATCH_SIZES
    assert tuple(args.threads) == defaults.THREADS
    assert (args.iterations, args.budget) == (defaults.ITERATIONS, defaults.BUDGET_S)
    assert args.no_compile is not defaults.COMPILE
