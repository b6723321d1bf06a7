"""The ratio table of a benchmark result, its headline and its footnotes: the cells the terminal table
(`bench_table`) and the HTML report both show, so the two never disagree on what may be quoted.

Everything here reads a `BenchResult` and returns text; nothing measures. Only the look of a ratio differs
between the two: the caller passes it in (``ratio`` of `table_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rich.table import Table

from torchport.bench.inference import EAGER, ORT_FP32, BenchResult, Measurement

HEADERS = ["batch", "threads", "contender", "median ms", "p99 ms", "samples/s", "vs eager", "vs ORT fp32"]
HEADERS += ["GFLOP/s", "of peak", "max |Δ| vs eager", "argmax = eager"]

Styled = TypeVar("Styled")


def table_rows(result: BenchResult, ratio: Callable[[float | None], Styled]) -> list[list[str | Styled]]:
    """The cells of the ratio table under ``HEADERS``: ``ratio`` gives a ratio its look (colour in the terminal, a
    pass/fail mark in the report). An unstable row shows "unstable" where its ratios would be, and a row compared
    with an unstable reference "ref unstable", whatever ratio the JSON holds."""
    rows: list[list[str | Styled]] = []
    for m in result.measurements:
        diff = "-" if m.max_abs_diff is None else ("ref" if m.contender == EAGER else f"{m.max_abs_diff:.1e}")
        rows.append(
            [
                str(m.batch),
                str(m.threads),
                m.contender + ("" if m.stable else " (unstable)"),
                f"{m.median_ms:.3f}",
                f"{m.p99_ms:.3f}",
                f"{m.throughput:,.0f}",
                _ratio_cell(result, m, EAGER, m.vs_eager, ratio),
                _ratio_cell(result, m, ORT_FP32, m.vs_ort_fp32, ratio),
                "-" if m.gflops is None else f"{m.gflops:.1f}",
                "-" if m.peak_fraction is None else f"{m.peak_fraction:.0%}",
                diff,
                "-" if m.argmax_agreement is None else f"{m.argmax_agreement:.1%}",
            ]
        )
    return rows


def _row(result: BenchResult, contender: str, batch: int, threads: int) -> Measurement | None:
    return next(
        (m for m in result.measurements if (m.contender, m.batch, m.threads) == (contender, batch, threads)), None
    )


def quotable(result: BenchResult, m: Measurement, reference: str) -> bool:
    """Whether a ratio of ``m`` to ``reference`` (in the same cell) may be quoted: both rows stable."""
    other = _row(result, reference, m.batch, m.threads)
    return m.stable and (other is None or other.stable)


def _ratio_cell(
    result: BenchResult,
    m: Measurement,
    reference: str,
    value: float | None,
    ratio: Callable[[float | None], Styled],
) -> str | Styled:
    if not m.stable:
        return "unstable"
    if not quotable(result, m, reference):
        return "ref unstable"
    return ratio(value)


def unstable_lines(result: BenchResult) -> list[str]:
    """One line per row that stayed unstable after measuring it again: which, where, and why."""
    return [
        f"{m.contender} at batch {m.batch}, {m.threads} thread(s): {'; '.join(m.unstable_because) or 'unstable'}"
        for m in result.measurements
        if not m.stable
    ]


def headline(result: BenchResult) -> str:
    """The figures worth quoting, from stable rows only: per batch size and thread count, the fastest contender
    against eager, and how many rows were left unquoted."""
    quotes = []
    for threads in result.threads:
        for batch in result.batches:
            candidates = [
                m
                for m in result.measurements
                if (m.batch, m.threads) == (batch, threads)
                and m.contender != EAGER
                and m.vs_eager is not None
                and quotable(result, m, EAGER)
            ]
            if candidates:
                best = max(candidates, key=lambda m: m.vs_eager or 0.0)
                quotes.append(f"{best.contender} {best.vs_eager:.2f}× eager at batch {batch}, {threads} thread(s)")
    text = "; ".join(quotes) if quotes else "no stable cell to quote"
    unstable = sum(not m.stable for m in result.measurements)
    if unstable:
        text += (
            f". {unstable} of {len(result.measurements)} cells unstable even when measured again: "
            "marked in the table, no ratio given for them"
        )
    return text


def flops_line(result: BenchResult) -> str | None:
    """How GFLOP/s and the fraction of peak were computed, for the table's caption and the report."""
    if not result.flops or result.peak is None:
        return None
    per_sample = min(result.flops.items())[1] / min(result.flops)
    line = f"{per_sample / 1e6:,.2f} MFLOP per sample (torch.utils.flop_counter); {result.peak['derivation']}"
    line += ". INT8/FP16 rows: effective GFLOP/s (the model's FLOPs over the time), not compared with the FP32 peak"
    if any((m.peak_fraction or 0) > 1 for m in result.measurements):
        line += "; a fraction over 100% means the clock runs above the one read (boost), not a miscount"
    return line


def _rich_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    colour = "green" if value >= 1.0 else "red"
    return f"[{colour}]{value:.2f}×[/]"


def bench_table(result: BenchResult) -> Table:
    caption = "\n".join(filter(None, [result.machine, flops_line(result)]))
    table = Table(title=f"inference benchmark: {result.subject}", caption=caption)
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "contender" else "right")
    for row in table_rows(result, _rich_ratio):
        table.add_row(*row)
    return table
