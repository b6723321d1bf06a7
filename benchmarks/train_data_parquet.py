"""Section ``parquet`` of benchmarks/train_data.py: a Parquet file larger than memory should be, one epoch, peak RSS.

Writes ``rows`` x 256 float32 features plus an int ``label`` (the argmax of the first four features: learnable)
in row groups of 65,536 rows (snappy, no dictionary: about 1,030 bytes a row, so 2,200,000 rows are 2.26 GB),
streamed a row group at a time so the generator stays small. Then trains a small MLP for one epoch with
``torchport train`` in a child process, twice: first with an empty ``data.cache_dir`` (the first pass, then the
encoded features written to the .npy cache, then training reading rows with pread), then again reusing that cache
(the first pass over the table, which collects the targets, runs both times). Each run's peak RSS is measured two
ways: GNU time's maximum resident set (exact; the largest single process, which with the default 0 workers is the
torchport process), and the largest sum over its process tree (workers included) sampled every 50 ms from /proc,
split by phase. Training runs on the CPU, whatever else the machine has.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from train_data_common import ChildRun, mib, python_peak, python_run, train_child, write_config

from torchport.data.tables import CHUNK_BYTES

FEATURES = 256
ROW_GROUP = 65_536
LIMIT = 10**9  # the bound on peak RSS: 1 GB, read as 10^9 bytes (the stricter of GB and GiB)
MLP = [{"linear": {"out_features": 256}}, "relu", {"linear": {"out_features": 128}}, "relu"]
MLP += [{"linear": {"out_features": "classes"}}]
# What `torchport train` on a table imports before it reads a row: the floor under every run's peak RSS.
IMPORTS = "import torch, pandas, pyarrow.parquet, torchport.cli, torchport.train.loop"
FIRST_OPTIMIZER = "torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])"
# How `torchport` ends (cli_exit.py): C's exit would page in 128 MiB more. Output first: os._exit loses buffers.
QUICK_EXIT = "; import os, sys; sys.stdout.flush(); os._exit(0)"
CHUNK_SWEEP = (4_096, None, 16_320, 65_536)  # data.chunk_rows for one pass each; None: the default (CHUNK_BYTES)


def ensure_parquet(path: Path, rows: int, seed: int = 0) -> float:
    """The table at ``path`` (reused when it already holds ``rows`` rows); seconds spent writing it."""
    if path.is_file() and pq.ParquetFile(path).metadata.num_rows == rows:
        return 0.0
    started = time.perf_counter()
    names = [f"f{j:03d}" for j in range(FEATURES)]
    schema = pa.schema([(name, pa.float32()) for name in names] + [("label", pa.int64())])
    partial = path.with_name(path.name + ".partial")
    # No dictionary: every value of a continuous column is distinct, so a row group's dictionary (under pyarrow's 1 MB
    # fallback) would hold all of them plus 17-bit indices, and the file would be ~1.5x its float32 data.
    with pq.ParquetWriter(partial, schema, use_dictionary=False) as writer:
        for first in range(0, rows, ROW_GROUP):
            count = min(ROW_GROUP, rows - first)
            x = np.random.default_rng([seed, first]).standard_normal((count, FEATURES), dtype=np.float32)
            label = np.argmax(x[:, :4], axis=1).astype(np.int64)
            columns = [pa.array(x[:, j]) for j in range(FEATURES)] + [pa.array(label)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=ROW_GROUP)
    partial.replace(path)
    return time.perf_counter() - started


def parquet_config(table: Path, cache: Path, args: Any) -> dict[str, Any]:
    return {
        "name": "bench_parquet",
        "seed": 0,
        "data": {
            "source": "parquet",
            "path": str(table),
            "target": "label",
            "batch_size": args.parquet_batch,
            "eval_batch_size": 4096,
            "num_workers": args.parquet_workers,
            "split": {"val": 0.05, "test": 0.0},
            "cache_dir": str(cache),
        },
        "model": {"layers": MLP},
        "train": {
            "epochs": 1,
            "optimizer": {"name": "AdamW", "lr": 0.001},
            "checkpoint_every_steps": None,
            "threads": args.threads,
            "device": "cpu",
        },
    }


def phase_of(run_dir: Path, cache: Path) -> Callable[[], str]:
    """What the child is doing, from the files it has written so far."""

    def phase() -> str:
        if (run_dir / "summary.json").exists():
            return "exit"
        if (run_dir / "config.yaml").exists():  # written just before the training loader starts
            return "training + validation"
        if any((cache / "tables").glob("*.partial-*")):
            return "second pass: cache write"
        return "start-up + first pass"

    return phase


def one_run(table: Path, cache: Path, work: Path, label: str, args: Any) -> ChildRun:
    config = write_config(parquet_config(table, cache, args), work / "parquet.yaml")
    run_dir = work / f"run-parquet-{label}"
    shutil.rmtree(run_dir, ignore_errors=True)  # phase_of reads its files: none may be left from a previous run
    overrides = ["data.in_memory=false"] if args.quick else []  # a quick table is small enough for memory
    return train_child(config, run_dir, overrides, phase_of(run_dir, cache))


def parquet_section(args: Any, work: Path) -> None:
    table = work / f"table-{args.parquet_rows}.parquet"
    written = ensure_parquet(table, args.parquet_rows)
    cache = work / "cache"  # data.cache_dir: the encoded features, deleted at the end however the section ends
    shutil.rmtree(cache, ignore_errors=True)  # the first run builds the cache, the second reuses it
    try:
        runs = {"cache build": one_run(table, cache, work, "build", args)}
        cached = [(path.name, path.stat().st_size) for path in sorted((cache / "tables").glob("*.npy"))]
        runs["cache reuse"] = one_run(table, cache, work, "reuse", args)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    report(table, written, cached, runs, args)
    floor(work)
    chunk_sweep(table, work)


def chunk_sweep(table: Path, work: Path) -> None:
    """One pass over the table as the first pass reads it, per chunk size, each in a fresh process: the peak above
    the same process without the pass, and the pass's seconds."""
    imports, _ = python_run(_pass_code(table, None, read=False), work / "pass-imports.time")
    print("  one pass over the table (TableFile.frames, each chunk's missing values counted), by data.chunk_rows:")
    print(f"  {'chunk_rows':>14}{'peak above the imports':>24}{'pass s':>8}")
    for rows in CHUNK_SWEEP:
        peak, seconds = python_run(_pass_code(table, rows, read=True), work / f"pass-{rows}.time")
        label = f"{rows:,}" if rows else f"null ({CHUNK_BYTES // 2**20} MiB)"
        print(f"  {label:>14}{mib(peak - imports):>24}{float(seconds):>8.1f}")


def _pass_code(table: Path, rows: int | None, read: bool) -> str:
    lines = [
        "import pathlib, time",
        "from torchport.cli_exit import arrow_allocates_with_malloc",
        "arrow_allocates_with_malloc()  # as `torchport` does",
        "import torch, pandas, pyarrow.parquet",
        "from torchport.data.tables import TableFile",
        f"table = TableFile(pathlib.Path({str(table)!r}), 'Parquet', {rows!r})",
        "names = table.column_names()",
    ]
    if read:
        lines += [
            "started = time.perf_counter()",
            "for frame in table.frames(names):\n    frame.isna().sum()",
            "print(time.perf_counter() - started)",
        ]
    return "\n".join(lines) + QUICK_EXIT


def floor(work: Path) -> None:
    """The peak of a process that only imports what `torchport train` imports and builds one optimizer, ended the
    way `torchport` ends (os._exit), and ended by C's exit, whose static destructors page in torch's CUDA libraries."""
    print(f"  the imports alone ({IMPORTS[7:]}): peak RSS {mib(python_peak(IMPORTS + QUICK_EXIT, work / 'i.time'))}")
    with_optimizer = IMPORTS + "; " + FIRST_OPTIMIZER
    print(
        f"  and a first optimizer (torch.optim imports torch._dynamo on it, in every training loop): peak RSS "
        f"{mib(python_peak(with_optimizer + QUICK_EXIT, work / 'o.time'))}; "
        f"{mib(python_peak(with_optimizer, work / 'o-exit.time'))} ended by C's exit, as `torchport` no longer is"
    )


def report(table: Path, written: float, cached: list[tuple[str, int]], runs: dict[str, ChildRun], args: Any) -> None:
    size = table.stat().st_size
    print(f"\n== parquet: {table} ({f'written in {written:.0f} s' if written else 'reused'})")
    print(
        f"{args.parquet_rows:,} rows x {FEATURES} float32 features + label, {size / 1e9:.2f} GB "
        f"({size / 1024**3:.2f} GiB), row groups of {ROW_GROUP:,}; "
        f"cache {f'{cached[0][0]} {mib(cached[0][1])}' if cached else 'NOT WRITTEN'}"
    )
    if args.quick:
        print("(--quick: data.in_memory=false forced, since a small table would be read into memory)")
    mode = "in_memory auto" if not args.quick else "in_memory false"
    print(
        f"MLP 256-256-128-4, batch {args.parquet_batch}, 1 epoch, {mode}, {args.parquet_workers} workers, "
        f"{args.threads} thread(s)"
    )
    print("wall s: the whole child process; train s and samples/s: torchport's summary.json (training + validation)")
    print(f"{'run':<14}{'wall s':>8}{'train s':>9}{'samples/s':>11}{'peak RSS largest':>18}{'peak RSS tree':>15}")
    for name, run in runs.items():
        summary = run.summary
        print(
            f"{name:<14}{run.wall_s:>8.1f}{summary['train_seconds']:>9.1f}{summary['samples_per_second']:>11,.0f}"
            f"{mib(run.largest_peak):>18}{mib(run.tree_peak):>15}"
        )
    for name, run in runs.items():
        sampled = {phase: peak for phase, peak in run.phase_peaks.items() if peak}  # "exit" may pass unsampled
        phases = ", ".join(f"{p} {mib(v)} ({run.phase_seconds.get(p, 0):.0f} s)" for p, v in sampled.items())
        print(f"  {name} peak tree RSS by phase: {phases}")
        accuracy = run.summary["final"].get("val_accuracy", float("nan"))
        peak = max(run.largest_peak, run.tree_peak)
        verdict = "under" if peak < LIMIT else "OVER"
        print(f"  {name}: val_accuracy {accuracy:.3f}; peak {peak / 1e9:.2f} GB, {verdict} the 1 GB target")
