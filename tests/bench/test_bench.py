"""`torchport bench`: contenders measured side by side, ratios to eager and ORT fp32, errors against eager."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from torchport.bench import inference
from torchport.bench.bundle import bench_stage, bundle_onnx, resolve_threads
from torchport.bench.inference import (
    EAGER,
    ORT_FP32,
    BenchResult,
    Contender,
    Measurement,
    _add_rates,
    bench_contenders,
    read_result,
)
from torchport.bench.peak import count_flops, estimate_peak, physical_cores
from torchport.bench.plots import latency_png, throughput_png
from torchport.bundle.manifest import read_bundle
from torchport.cli import main
from torchport.errors import UsageError


def _contender(name: str, scale: float = 1.0, fail: bool = False) -> Contender:
    def prepare(threads: int, array: np.ndarray):  # type: ignore[no-untyped-def]
        if fail:
            raise RuntimeError("no C++ compiler\nsecond line")
        return lambda: (array * scale, None)

    return Contender(name, "fake", prepare)


@pytest.fixture
def steady(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell judged stable: these tests check ratios and errors, not this machine's noise (test_stability.py
    checks the judgement on made-up timings)."""
    monkeypatch.setattr(inference, "instability", lambda *_: [])


def test_bench_contenders_reports_ratios_errors_and_agreement(steady: None) -> None:
    inputs = {1: np.array([[0.0, 1.0, 2.0]], dtype=np.float32), 4: np.eye(4, 3, dtype=np.float32)}
    contenders = [_contender(EAGER), _contender(ORT_FP32, 1.0), _contender("flipped", -1.0)]
    result = bench_contenders("fake", contenders, inputs, threads=[1], iterations=7, least=3, rounds=2)
    assert result.batches == [1, 4] and result.threads == [1]
    assert [(m.batch, m.contender) for m in result.measurements] == [
        (b, n) for b in (1, 4) for n in (EAGER, ORT_FP32, "flipped")
    ]
    by = {(m.batch, m.contender): m for m in result.measurements}
    eager = by[1, EAGER]
    assert eager.vs_eager == 1.0 and eager.max_abs_diff == 0.0 and eager.argmax_agreement == 1.0
    assert eager.iterations == 8  # 7 asked, rounded up to 2 rounds of 4
    assert by[1, ORT_FP32].vs_ort_fp32 == 1.0
    assert by[1, "flipped"].max_abs_diff == 4.0  # |-2 - 2|
    assert by[1, "flipped"].argmax_agreement == 0.0
    assert all(m.median_ms > 0 and m.p99_ms >= m.median_ms and m.throughput > 0 for m in result.measurements)


def test_a_failing_contender_is_one_line_and_the_rest_are_measured() -> None:
    contenders = [_contender(EAGER), _contender("torch.compile", fail=True), _contender(ORT_FP32)]
    result = bench_contenders("fake", contenders, {1: np.ones((1, 2), np.float32)}, iterations=3, least=1, rounds=1)
    assert [m.contender for m in result.measurements] == [EAGER, ORT_FP32]
    assert result.notes == ["torch.compile failed at batch 1, 1 thread(s): RuntimeError: no C++ compiler"]


def _result() -> BenchResult:
    rows = [
        Measurement(name, "fake", None, batch, 1, ms * batch, ms * batch * 1.5, 1000 / ms, 5, 0.0, 0.0, None, 1.0)
        for batch in (1, 64)
        for name, ms in ((EAGER, 2.0), (ORT_FP32, 0.5), ("ort int8", 0.25))
    ]
    return BenchResult("fake", "a machine", [1, 64], [1], rows, ["torch.compile failed: nothing"])


def test_result_round_trips_through_json_and_plots(tmp_path: Path) -> None:
    result = _result()
    path = result.write(tmp_path / "bench.json")
    assert read_result(path) == result
    assert json.loads(path.read_text())["measurements"][0]["contender"] == EAGER
    for png in (latency_png(result), throughput_png(result)):
        assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_bench_needs_the_run_directory(digits_run: Path, tmp_path: Path) -> None:
    alone = tmp_path / "bundle"
    (digits_run / "bundle").rename(alone)
    with pytest.raises(UsageError, match="run directory"):
        bench_stage(alone, Console(quiet=True))


def test_bench_stage_on_the_digits_bundle(digits_run: Path, tmp_path: Path, steady: None) -> None:
    console = Console(record=True, width=200)
    out = tmp_path / "copy.json"
    result = bench_stage(
        digits_run / "bundle", console, batches=(1, 8), iterations=5, budget_s=0.2, compile=False, json_path=out
    )
    text = console.export_text()
    assert "vs ORT fp32" in text and "ort fp32" in text
    assert read_result(digits_run / "bench.json") == result == read_result(out)
    for plot in ("bench_latency.png", "bench_throughput.png"):
        assert (digits_run / plot).read_bytes().startswith(b"\x89PNG")
    assert set(bundle_onnx(read_bundle(digits_run / "bundle"))) == {"fp32"}
    by = {(m.batch, m.contender): m for m in result.measurements}
    openvino = "openvino fp32"
    assert set(by) == {(b, c) for b in (1, 8) for c in (EAGER, ORT_FP32, openvino)}  # this bundle has no .pt2
    for batch in (1, 8):
        for name in (ORT_FP32, openvino):  # same answers, not only faster
            row = by[batch, name]
            assert row.max_abs_diff is not None and row.max_abs_diff < 1e-4 and row.argmax_agreement == 1.0, row
        fp32 = by[batch, ORT_FP32]
        assert fp32.vs_ort_fp32 == 1.0 and fp32.vs_eager is not None
    # FLOPs from torch.utils.flop_counter scale with the batch; GFLOP/s and the fraction of peak follow from them
    assert result.flops[8] == 8 * result.flops[1] > 0
    assert result.peak is not None and "GFLOP/s per core" in result.peak["derivation"]
    eager = by[1, EAGER]
    assert eager.gflops == pytest.approx(result.flops[1] / eager.median_ms / 1e6, rel=0.01, abs=0.01)
    assert eager.peak_fraction == pytest.approx(eager.gflops / result.peak["per_core_gflops"], rel=0.01, abs=1e-3)
    assert "MFLOP per sample" in text and "of peak" in text


AVX512_CPUINFO = """processor\t: 0
model name\t: Some Xeon
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw
"""


def test_peak_is_derived_from_vector_width_fma_units_and_clock(tmp_path: Path) -> None:
    peak = estimate_peak(AVX512_CPUINFO, cpufreq=tmp_path / "absent")
    assert (peak.vector, peak.lanes, peak.fma_units, peak.clock_ghz) == ("avx512f", 16, 2, 2.0)
    assert peak.per_core_gflops == 16 * 2 * 2 * 2.0
    assert peak.gflops(10_000) == peak.per_core_gflops * peak.cores  # never more cores than the process may use
    (tmp_path / "max").write_text("3500000\n")  # kHz, as cpufreq writes it
    boosted = estimate_peak(AVX512_CPUINFO.replace("avx512f ", ""), cpufreq=tmp_path / "max")
    assert (boosted.lanes, boosted.clock_ghz, boosted.clock_source) == (8, 3.5, "cpufreq maximum")
    assert "8 lanes (avx2) × 2 FMA units (assumed) × 2 FLOP per FMA × 3.50 GHz" in boosted.derivation()


def test_flops_are_counted_for_linear_and_conv_layers() -> None:
    import torch

    linear = torch.nn.Linear(64, 10)
    assert count_flops(linear, np.zeros((4, 64), np.float32)) == 2 * 4 * 64 * 10
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)
    assert count_flops(conv, np.zeros((2, 1, 8, 8), np.float32)) == 2 * 2 * 8 * 8 * 8 * 9


def test_all_threads_is_every_cpu_and_duplicates_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    assert resolve_threads([1, "all"]) == [1, 4]
    assert resolve_threads(["all", 2, 2]) == [4, 2]
    assert resolve_threads([4, "all"]) == [4]


def test_rates_use_the_model_flops_and_cap_the_peak_at_the_physical_cores() -> None:
    rows = [
        Measurement(name, "fake", None, 1, threads, 2.0, 3.0, 500.0, 5, 0.0, precision=precision)
        for name, threads, precision in (("a", 8, "fp32"), ("b", 2, "fp32"), ("c", 8, "int8"))
    ]
    result = BenchResult("fake", "m", [1], [2, 8], rows, flops={1: 4_000_000_000})
    _add_rates(result, per_core_gflops=100.0, cores=4)
    assert [m.gflops for m in rows] == [2000.0, 2000.0, 2000.0]  # 4e9 FLOP in 2 ms
    assert [m.peak_fraction for m in rows] == [5.0, 10.0, None]  # 8 threads get 4 cores' peak; int8 is not compared


def test_hyperthread_siblings_count_as_one_core(tmp_path: Path) -> None:
    for cpu, core in ((0, "0,2"), (1, "1,3"), (2, "0,2"), (3, "1,3")):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "core_cpus_list").write_text(core + "\n")
    assert physical_cores({0, 1, 2, 3}, tmp_path) == 2
    assert physical_cores({0, 2}, tmp_path) == 1
    assert physical_cores({0, 9}, tmp_path) == 2  # no topology for cpu9: counted as its own core


def test_bench_threads_option_rejects_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "somewhere", "--threads", "1,many"])
    assert exit_info.value.code == 2 and "1,all" in capsys.readouterr().err
