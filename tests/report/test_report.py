"""The HTML report: every section present, images embedded, nothing fetched, and it renders in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from torchport.bench.bundle import bench_stage
from torchport.bundle.manifest import read_bundle
from torchport.config import load_config
from torchport.pipeline import optimize_stage
from torchport.report.figures import parity_errors
from torchport.report.html import write_report
from torchport.runtimes import browser
from torchport.runtimes.conformance import conformance_command

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SECTIONS = ["Training", "Parity", "Variants", "Conformance", "Bundle", "Inference benchmark"]
IMAGES = ["training curves", "parity error per artifact and runtime", "latency by batch size", "throughput"]
# Every figure and table says how to remake it: the whole run, training, parity, variants, conformance, benchmark.
REPRODUCE = ["torchport run ", "torchport train ", "torchport verify ", "torchport optimize ", "torchport conformance "]
REPRODUCE += ["torchport bench "]
# Written into the DOM after load: each image's alt text, whether it finished loading and its decoded size.
PROBE = """<script>window.addEventListener('load', function () {
  var found = Array.from(document.images).map(function (i) {
    return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
  });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(found);
  document.body.appendChild(pre);
});</script>"""


def chromium() -> str:
    found = browser.chromium()  # the conformance runner's lookup: $CHROMIUM, then the usual names
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed; CI must install it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")


def _bench_json(run_dir: Path) -> None:
    rows = [
        {
            "contender": name,
            "runtime": "onnxruntime",
            "artifact": None,
            "batch": batch,
            "threads": 1,
            "median_ms": ms,
            "p99_ms": ms * 2,
            "throughput": batch / ms * 1e3,
            "iterations": 5,
            "prepare_s": 0.0,
            "max_abs_diff": 0.0,
            "vs_eager": 2.0,
            "vs_ort_fp32": 1.0,
            "argmax_agreement": 1.0,
        }
        for batch in (1, 64)
        for name, ms in (("pytorch eager", 1.0), ("ort fp32", 0.5))
    ]
    bench = {"subject": "digits", "machine": "m", "batches": [1, 64], "threads": [1], "measurements": rows}
    (run_dir / "bench.json").write_text(json.dumps({**bench, "notes": ["torch.compile failed: <no compiler>"]}))


def check_page(page: str) -> None:
    for section in SECTIONS:
        assert re.search(rf"<h2[^>]*>{section}</h2>", page), section
    for command in REPRODUCE:
        assert f"<code>{command}" in page, command
    for alt in IMAGES:
        assert re.search(rf"<img alt='{alt}' src='data:image/png;base64,[A-Za-z0-9+/=]{{1000,}}'>", page), alt
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE), "external request"
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_report_has_a_benchmark_section_when_bench_json_exists(digits_run: Path) -> None:
    page = write_report(digits_run).read_text()
    assert "Inference benchmark" not in page
    images = page.count("<img ")
    _bench_json(digits_run)
    page = write_report(digits_run).read_text()
    assert "torch.compile failed: &lt;no compiler&gt;" in page and "2.00×" in page
    assert page.count("<img ") == images + 2 and "latency by batch size" in page and "torchport bench " in page


def test_missing_chromium_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install"):
        chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        chromium()


@pytest.mark.slow
def test_report_renders_in_headless_chromium(digits_run: Path, tmp_path: Path) -> None:
    browser = chromium()
    config_path = digits_run / "config.yaml"  # variants measured briefly: bench is what this test looks at
    config_path.write_text(load_config(config_path, ["export.latency_iterations=2"]).to_yaml())
    assert optimize_stage(digits_run / "bundle", Console(quiet=True))
    assert conformance_command(digits_run / "bundle", "python", None) == 0
    bench_stage(digits_run / "bundle", Console(quiet=True), batches=(1, 8), iterations=3, budget_s=0.1, compile=False)
    page = write_report(digits_run).read_text()
    check_page(page)
    assert all(f"ort {v}" in page for v in ("int8", "fp16", "optimized"))
    labels = [label for label, *_ in parity_errors(read_bundle(digits_run / "bundle").manifest)]
    assert "model.onnx · python vs golden" in labels and "model.int8.onnx · onnxruntime vs pytorch" in labels, labels
    assert "GFLOP/s per core" in page and "MFLOP per sample" in page

    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*base, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, dom[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert [i["alt"] for i in images] == IMAGES
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in images), images  # none broken

    shot = tmp_path / "report.png"
    report = digits_run / "report.html"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri()],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
