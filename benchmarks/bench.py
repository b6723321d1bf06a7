"""`torchport bench` on the ResNet-18-sized image CNN of ``variants.py`` (random weights; speed and agreement only).

Exports it to ONNX, builds the optimised, INT8 (static QDQ, calibrated on random inputs) and FP16 variants with the
functions `torchport optimize` uses, then measures PyTorch eager, torch.compile, each ONNX model in ONNX Runtime and
the fp32 model in OpenVINO side by side with the same code as `torchport bench`, printing the ratio table (with
GFLOP/s and the fraction of this machine's peak) and writing bench.json, bench_latency.png and bench_throughput.png.

    .venv/bin/python benchmarks/bench.py --out runs/bench-resnet18     # batch 1, 8, 64; 1 thread and all cores
    .venv/bin/python benchmarks/bench.py --batch-sizes 1 --threads 1 --no-compile
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from variants import export, int8_settings, resnet18  # the model, exporter and INT8 settings of variants.py

from torchport.bench import defaults
from torchport.bench.bundle import resolve_threads, write_outputs
from torchport.bench.contenders import model_contenders
from torchport.bench.inference import bench_contenders
from torchport.bench.peak import count_flops
from torchport.bench.table import bench_table
from torchport.cli_parser import int_list, threads_list
from torchport.export.variants import build_variant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int_list, default=list(defaults.BATCH_SIZES), help="comma-separated")
    parser.add_argument("--threads", type=threads_list, default=list(defaults.THREADS), help="e.g. 1,all")
    # a ResNet-18 call takes milliseconds, not the digits CNN's microseconds: fewer calls, a longer budget per cell
    parser.add_argument("--iterations", type=int, default=50, help="most timed calls per contender and cell")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per contender and cell")
    parser.add_argument("--variants", default="optimized,int8,fp16")
    parser.add_argument("--int8-activations", choices=["uint8", "int8"], default="uint8")
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-resnet18"), help="where bench.json/png go")
    args = parser.parse_args(argv)
    console = Console(width=170)
    torch.manual_seed(0)
    model = resnet18()
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, 3, 224, 224), dtype=np.float32) for b in args.batch_sizes}
    settings = int8_settings(args.per_channel, args.int8_activations)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        fp32 = export(model, torch.from_numpy(rng.standard_normal((2, 3, 224, 224), dtype=np.float32)), work / "m.onnx")
        paths = {"fp32": fp32}
        calibration = rng.standard_normal((32, 3, 224, 224), dtype=np.float32)
        for variant in filter(None, args.variants.split(",")):
            started = time.perf_counter()
            target = work / f"m.{variant}.onnx"
            build_variant(variant, fp32, target, settings, calibration, "input")
            console.log(f"built {variant} in {time.perf_counter() - started:.1f} s")
            paths[variant] = target
        result = bench_contenders(
            "ResNet-18 3x224x224 (random weights)",
            model_contenders(model, paths, compile=not args.no_compile),
            inputs,
            resolve_threads(args.threads),
            iterations=args.iterations,
            budget_s=args.budget,
            warmup=1,
            progress=console.log,
            flop_counter=lambda array: count_flops(model, array),
        )
    console.print(bench_table(result))
    for note in result.notes:
        console.print(f"note: {note}")
    args.out.mkdir(parents=True, exist_ok=True)
    console.print("wrote " + ", ".join(str(p) for p in write_outputs(result, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
