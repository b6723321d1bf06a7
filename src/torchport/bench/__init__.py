"""Inference benchmarks: PyTorch eager, torch.compile and every ONNX artifact of a bundle, side by side, with plots.

`bundle.bench_stage` is the `torchport bench BUNDLE` verb; `inference.bench_contenders` measures any set of
callables (the ``benchmarks/bench.py`` script uses it on a larger CNN without a bundle); `table` turns a result
into the ratio table, `plots` into pictures, and `defaults` holds the settings a user gets without asking.

Nothing is imported here, so that reading `defaults` (the CLI does, to build ``--help``) costs no NumPy.
"""
