"""Section ``precision`` of benchmarks/train_data.py: ``train.precision`` bf16 vs fp32 on CPU, samples/s side by side.

Trains examples/digits.yaml (the small CNN) and examples/images_resnet.yaml (torchvision's resnet18 on 32x32
shapes) in this process with ``torchport.train.loop.train`` on the CPU (``train.device=cpu``, even where a GPU is
present), fp32 and bf16 interleaved, no step checkpoints (each epoch's checkpoint is still written).
bf16 autocast on a CPU without native bf16 instructions (AVX512_BF16 or AMX) converts in software, so it is
expected to be slower there; the section says which kind of CPU it ran on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from train_data_common import train_summary

from torchport.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "digits CNN": ROOT / "examples" / "digits.yaml",
    "resnet18 (shapes)": ROOT / "examples" / "images_resnet.yaml",
}


def cpu_bf16() -> str:
    """Which native bf16 instructions this CPU has, from /proc/cpuinfo's flags."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown (no /proc/cpuinfo)"
    native = sorted({flag for flag in flags.split() if flag == "avx512_bf16" or flag.startswith("amx")})
    return ", ".join(native) if native else "none (no avx512_bf16, no amx): bf16 is emulated"


def ensure_shapes() -> None:
    if not (ROOT / "examples" / "data" / "shapes").is_dir():
        subprocess.run([sys.executable, str(ROOT / "examples" / "data" / "make_shapes.py")], check=True)


def samples_per_second(path: Path, precision: str, epochs: int, threads: int) -> tuple[float, float]:
    overrides = [f"train.precision={precision}", f"train.epochs={epochs}", "train.checkpoint_every_steps=null"]
    config = load_config(path, [*overrides, f"train.threads={threads}", "train.device=cpu"])
    summary = train_summary(config)
    return float(summary["samples_per_second"]), float(summary["final"].get("val_accuracy", float("nan")))


def precision_section(args: Any) -> None:
    ensure_shapes()
    threads = args.precision_threads or len(os.sched_getaffinity(0))
    epochs = {"digits CNN": args.digits_epochs, "resnet18 (shapes)": args.resnet_epochs}
    print(f"\n== precision: bf16 vs fp32 autocast on CPU; native bf16: {cpu_bf16()}")
    print(f"{threads} torch thread(s), no step checkpoints, best of {args.repeats}")
    print(f"{'model':<20}{'epochs':>7}{'fp32 samples/s':>16}{'bf16 samples/s':>16}", end="")
    print(f"{'bf16/fp32':>11}{'val acc fp32/bf16':>20}")
    for name, path in EXAMPLES.items():
        results: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision in results:
                results[precision].append(samples_per_second(path, precision, epochs[name], threads))
        fp32, bf16 = (max(results[p])[0] for p in ("fp32", "bf16"))
        accuracy = "/".join(f"{results[p][0][1]:.3f}" for p in ("fp32", "bf16"))
        print(f"{name:<20}{epochs[name]:>7}{fp32:>16,.0f}{bf16:>16,.0f}{bf16 / fp32:>11.3f}{accuracy:>20}")
