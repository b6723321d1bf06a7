"""Inference benchmarks: PyTorch eager, torch.compile and every ONNX artifact of a bundle, side by side, with plots.

`bench_stage` is the `torchport bench BUNDLE` verb; `bench_contenders` measures any set of callables (the
``benchmarks/bench.py`` script uses it on a larger CNN without a bundle).
"""

from torchport.bench.bundle import bench_bundle, bench_stage, bench_table
from torchport.bench.inference import BenchResult, Contender, Measurement, bench_contenders, read_result

__all__ = [
    "BenchResult",
    "Contender",
    "Measurement",
    "bench_bundle",
    "bench_contenders",
    "bench_stage",
    "bench_table",
    "read_result",
]
