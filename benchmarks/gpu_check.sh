#!/usr/bin/env bash
# Distributed training on a CUDA machine, by hand (not in CI): a short DDP job over every visible GPU with
# nccl, a DataParallel job in one process, and a single-GPU job for comparison; prints each job's summary.
#
#   benchmarks/gpu_check.sh [CONFIG]          (default: examples/digits.yaml; run from the repository root)
#
# Exits non-zero if there is no GPU, if a job fails, or if a job did not run the way it was asked to
# (backend nccl, DataParallel actually used, accuracy reached).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
config="${1:-$root/examples/digits.yaml}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

gpus="$("$python" -c 'import torch; print(torch.cuda.device_count())')"
if [ "$gpus" -lt 1 ]; then
  echo "gpu_check: no CUDA GPU visible (torch.cuda.device_count() == 0)" >&2
  exit 1
fi
"$python" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, nccl {torch.cuda.nccl.version()}"); [print(f"  cuda:{i} {torch.cuda.get_device_name(i)}") for i in range(torch.cuda.device_count())]'
# One DDP process per GPU (nccl refuses two ranks on one GPU); with one GPU it is a world of one, which still
# runs nccl's init and DDP's gradient hooks.
procs=$gpus

run() {  # name, then torchport train arguments
  local name="$1"; shift
  local started=$SECONDS
  echo "== $name"
  if ! "$python" -m torchport.cli train "$config" --run-dir "$out/$name" train.epochs=4 "$@" >"$out/$name.log" 2>&1; then
    tail -n 30 "$out/$name.log"
    echo "gpu_check: $name failed" >&2
    exit 1
  fi
  "$python" - "$out/$name/summary.json" "$name" "$((SECONDS - started))" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
best = summary["best"].get(summary["metric"])
print(f"   {sys.argv[2]}: strategy {summary['strategy']}, backend {summary['backend']}, world size "
      f"{summary['world_size']}, global batch {summary['global_batch_size']}, {summary['samples_per_second']} "
      f"samples/s, best {summary['metric']} {best:.4f}, {sys.argv[3]} s wall")
EOF
}

run single train.device=cuda
run ddp-nccl --nproc-per-node "$procs" train.device=cuda
run dataparallel train.strategy=dp train.device=cuda

"$python" - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
ddp = json.loads((out / "ddp-nccl" / "summary.json").read_text())
dp_log = (out / "dataparallel.log").read_text()
problems = []
if ddp["backend"] != "nccl" or ddp["strategy"] != "ddp":
    problems.append(f"DDP ran as {ddp['strategy']} with backend {ddp['backend']}")
if "DataParallel is skipped" in dp_log:
    problems.append("DataParallel was skipped although GPUs are visible")
for name in ("single", "ddp-nccl", "dataparallel"):
    summary = json.loads((out / name / "summary.json").read_text())
    if (summary["best"].get("val_accuracy") or 0) < 0.9:
        problems.append(f"{name} reached only {summary['best']}")
print("gpu_check: " + ("; ".join(problems) if problems else "ok — nccl DDP, DataParallel and single GPU all trained"))
sys.exit(1 if problems else 0)
EOF
