"""The report's benchmark section, read from ``RUN_DIR/bench.json`` (written by `torchport bench`): the report
reads the benchmark's results as data and never runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torchport.bench.inference import BenchResult, read_result
from torchport.bench.plots import LATENCY_PNG, THROUGHPUT_PNG, latency_png, throughput_png
from torchport.bench.table import HEADERS, flops_line, headline, table_rows, unstable_lines
from torchport.report.view import Table, ratio_mark, shell_word


@dataclass(frozen=True)
class BenchView:
    machine: str
    headline: str  # the figures a reader takes away: stable cells only (bench/stability.py says what stable means)
    flops: str | None
    notes: list[str]
    unstable: list[str]
    table: Table
    latency: bytes
    throughput: bytes
    reproduce: list[str]


def _plot(written: Path, draw: Callable[[BenchResult], bytes], result: BenchResult) -> bytes:
    """The PNG `torchport bench` wrote beside bench.json, or drawn from it when it is not there."""
    return written.read_bytes() if written.is_file() else draw(result)


def bench_command(result: BenchResult, run_dir: Path) -> str:
    """The `torchport bench` line that measures the same cells again, with the same budget."""
    threads = ",".join(str(t) for t in result.threads)
    batches = ",".join(str(b) for b in result.batches)
    command = f"torchport bench {shell_word(run_dir / 'bundle')} --batch-sizes {batches} --threads {threads}"
    if result.iterations is not None and result.budget_s is not None:
        command += f" --iterations {result.iterations} --budget {result.budget_s:g}"
    compiled = any(m.contender == "torch.compile" for m in result.measurements)
    if not compiled and not any(note.startswith("torch.compile") for note in result.notes):
        command += " --no-compile"
    return command


def bench_view(run_dir: Path) -> BenchView | None:
    path = run_dir / "bench.json"
    if not path.is_file():
        return None
    result = read_result(path)
    return BenchView(
        machine=result.machine,
        headline=headline(result),
        flops=flops_line(result),
        notes=result.notes,
        unstable=unstable_lines(result),
        table=Table(HEADERS, table_rows(result, ratio_mark)),
        latency=_plot(run_dir / LATENCY_PNG, latency_png, result),
        throughput=_plot(run_dir / THROUGHPUT_PNG, throughput_png, result),
        reproduce=[bench_command(result, run_dir)],
    )
