"""Latency of the ONNX Runtime variants side by side: fp32, optimised, INT8 (static QDQ), FP16, and PyTorch eager.

Two models: the digits CNN (trained for a few epochs here) and a ResNet-18 at 3x224x224 with random weights (speed
only). Each variant is built by the same functions `torchport optimize` uses. Prints the median (and p99) latency at
batch 1 and 64 for each intra-op thread count, with the speed ratio to ONNX Runtime fp32 and to PyTorch eager
(> 1 means faster).

    .venv/bin/python benchmarks/variants.py                    # both models, 1 and 2 threads
    .venv/bin/python benchmarks/variants.py --models resnet18 --threads 2 --int8-activations int8

Run it on an otherwise idle machine: the ratios are only as good as the quiet around them.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchport.bench.inference import iterations_for
from torchport.config import ExportConfig
from torchport.export.measure import time_calls
from torchport.export.optimize import quiet
from torchport.export.variants import build_variant
from torchport.sessions import onnxruntime_session

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "optimized", "int8", "fp16")


# --- ResNet-18 (He et al. 2016), plain torch: 11.7 M parameters, 1.8 GMACs at 224x224 ---------------------------


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet18(classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    width = 64
    for outputs, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(width, outputs, stride), BasicBlock(outputs, outputs, 1)]
        width = outputs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    model = nn.Sequential(*layers)
    for module in model.modules():  # random but trained-looking BN statistics, so activations stay in range
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None and module.running_var is not None:
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


# --- models under test ---------------------------------------------------------------------------------------


@dataclass
class Subject:
    name: str
    module: nn.Module
    onnx_path: Path
    calibration: np.ndarray
    inputs: dict[int, np.ndarray]


def export(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with quiet():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=18,
            external_data=False,
        )
    return path


def digits_subject(work: Path, batches: list[int]) -> Subject:
    from rich.console import Console

    from torchport.config import load_config
    from torchport.data import load_data
    from torchport.export.deployable import load_trained_run
    from torchport.train.loop import train

    config = load_config(ROOT / "examples" / "digits.yaml", ["train.epochs=3", "export.aoti=false"])
    train(config, work / "digits", console=Console(quiet=True))
    run = load_trained_run(work / "digits")
    data = load_data(config.data, config.seed)
    model = run.module.model.eval()
    rng = np.random.default_rng(0)
    inputs = {b: data.val.x[rng.integers(0, len(data.val.x), b)] for b in batches}
    path = export(model, torch.from_numpy(data.val.x[:2]), work / "digits.onnx")
    return Subject("digits CNN", model, path, data.train.x[:256], inputs)


def resnet_subject(work: Path, batches: list[int]) -> Subject:
    torch.manual_seed(0)
    model = resnet18()
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, 3, 224, 224), dtype=np.float32) for b in batches}
    path = export(model, torch.from_numpy(inputs[batches[0]][:1].repeat(2, axis=0)), work / "resnet18.onnx")
    calibration = rng.standard_normal((32, 3, 224, 224), dtype=np.float32)
    return Subject("ResNet-18 3x224x224", model, path, calibration, inputs)


# --- measuring -----------------------------------------------------------------------------------------------


def measure(call: object, budget_s: float, least: int, most: int) -> tuple[float, float]:
    assert callable(call)
    started = time.perf_counter()
    call()
    count = iterations_for(time.perf_counter() - started, budget_s, least, most)
    return time_calls(call, count, warmup=1)


def eager_latency(subject: Subject, threads: int, batch: int, args: argparse.Namespace) -> tuple[float, float]:
    torch.set_num_threads(threads)
    x = torch.from_numpy(subject.inputs[batch])

    def call() -> None:
        with torch.inference_mode():
            subject.module(x)

    return measure(call, args.budget, args.least, args.most)


def ort_latency(
    path: Path, subject: Subject, threads: int, batch: int, args: argparse.Namespace
) -> tuple[float, float]:
    session = onnxruntime_session(path, threads=threads)
    feed = {session.get_inputs()[0].name: subject.inputs[batch]}
    return measure(lambda: session.run(None, feed), args.budget, args.least, args.most)


def int8_settings(per_channel: bool, activations: str) -> ExportConfig:
    """Static QDQ INT8 calibrated by min/max on the calibration array given to build_variant (its length is the
    sample count recorded)."""
    return ExportConfig(
        int8_mode="static", per_channel=per_channel, int8_activations=activations, calibration_method="minmax"
    )


def build_variants(subject: Subject, work: Path, args: argparse.Namespace) -> dict[str, Path]:
    settings = int8_settings(args.per_channel, args.int8_activations)
    paths = {"fp32": subject.onnx_path}
    for variant in VARIANTS[1:]:
        target = work / f"{subject.onnx_path.stem}.{variant}.onnx"
        started = time.perf_counter()
        build_variant(variant, subject.onnx_path, target, settings, subject.calibration, "input")
        size = target.stat().st_size / 2**20
        print(f"  built {target.name}: {size:.2f} MiB in {time.perf_counter() - started:.1f} s", flush=True)
        paths[variant] = target
    return paths


def benchmark(subject: Subject, work: Path, args: argparse.Namespace) -> None:
    fp32_mib = subject.onnx_path.stat().st_size / 2**20
    print(f"\n== {subject.name}: {fp32_mib:.2f} MiB fp32 ONNX", flush=True)
    paths = build_variants(subject, work, args)
    header = (
        f"{'batch':>5} {'thr':>3} {'runtime':<16} {'median ms':>10} {'p99 ms':>9} {'vs ORT fp32':>11} {'vs eager':>9}"
    )
    print(header)
    print("-" * len(header))
    for batch in args.batches:
        for threads in args.threads:
            eager = eager_latency(subject, threads, batch, args)
            rows: list[tuple[str, tuple[float, float]]] = [("pytorch eager", eager)]
            rows += [(f"ort {name}", ort_latency(path, subject, threads, batch, args)) for name, path in paths.items()]
            fp32 = rows[1][1][0]
            for label, (median, p99) in rows:
                print(
                    f"{batch:>5} {threads:>3} {label:<16} {median:>10.3f} {p99:>9.3f} {fp32 / median:>10.2f}x "
                    f"{eager[0] / median:>8.2f}x",
                    flush=True,
                )
            print()


def machine() -> str:
    import onnxruntime as ort

    flags = ""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "")
        flag_line = next((line for line in text.splitlines() if line.startswith("Flags")), "")
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "f16c")
        flags = f"{model}; " + " ".join(f for f in wanted if f" {f}" in flag_line)
    except OSError:
        pass
    env = "/".join(os.environ.get(name, "-") for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    return (
        f"{platform.machine()} {os.cpu_count()} CPUs ({flags}); torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}; OMP/OPENBLAS_NUM_THREADS {env}; load average {os.getloadavg()[0]:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["digits", "resnet18"], default=["digits", "resnet18"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per cell (default 2)")
    parser.add_argument("--least", type=int, default=3, help="fewest timed runs per cell")
    parser.add_argument("--most", type=int, default=200, help="most timed runs per cell")
    parser.add_argument("--per-channel", action="store_true", help="per-channel INT8 weights")
    parser.add_argument(
        "--int8-activations", choices=["uint8", "int8"], default="uint8", help="U8S8 (default) or S8S8 static INT8"
    )
    args = parser.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        makers = {"digits": digits_subject, "resnet18": resnet_subject}
        for name in args.models:
            benchmark(makers[name](work, args.batches), work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
