"""`torchport serve` against the server a user writes by hand and against LitServe, side by side under one load;
and torchport's v2 over gRPC beside its REST.

Four servers, each its own process, started one at a time on the same machine and hit by the same closed-loop
load from ``wrk`` (a C load generator; one sample per request, the v2 JSON body of ``serve_servers/post.lua``):

- ``torchport``: ``python -m torchport.serve BUNDLE`` (validation, metrics, dynamic batching; no access log);
- ``torchport-grpc``: the same server with ``--grpc-port``, loaded over gRPC (``ModelInfer``, the same image as raw
  contents) by h2load, a C HTTP/2 load generator (``apt-get install -y nghttp2-client``), or without it by a
  Python grpc.aio client (``serve_servers/grpc_cells.py``: one connection, ``concurrency`` calls in flight);
- ``handwritten``: FastAPI + ONNX Runtime, one ``session.run`` per request, no batching
  (``serve_servers/handwritten.py``);
- ``litserve``: LitServe serving the same ``model.onnx`` through ONNX Runtime with its own batching
  (``serve_servers/litserve_server.py``).

Two models, trained briefly and exported to real bundles cached under ``--run-dir`` (reruns skip the build): the
digits CNN of ``examples/digits.yaml`` and the wide MLP of ``serve_servers/wide_mlp.yaml`` (64 -> 4096 -> 4096 -> 10,
memory-bound at batch 1, where batching pays). Fair settings: every server gets the same ONNX Runtime session
options with ``--threads`` intra-op threads (default 1: two cores are shared by the server, its batches and wrk),
batches of at most ``--max-batch-size`` samples waiting at most ``--max-batch-delay-ms`` (torchport and LitServe),
uvicorn with the same event loop and HTTP parser for all three, and the same CPUs (``--taskset`` pins them all).

It prints requests/s, p50 and p99 latency, non-2xx responses (failed calls, for gRPC), socket errors, the server's
CPU time per request, the ratio to the hand-written server, and whether torchport meets its targets: >= 0.9x the
hand-written server's requests/s at concurrency 1, >= 4x on the wide MLP at concurrency 64, and gRPC >= REST at
concurrency 1 and 64.

    apt-get install -y wrk && .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/serve.py --duration 10 --json runs/serve-bench/serve.json
    .venv/bin/python benchmarks/serve.py --duration 2 --concurrency 1,8 --models digits --servers torchport,handwritten
    .venv/bin/python benchmarks/serve.py --models digits --servers torchport,torchport-grpc --concurrency 1,64
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from serve_servers import grpc_cells

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS_DIR = HERE / "serve_servers"
LUA = SERVERS_DIR / "post.lua"
SERVERS = ["torchport", "torchport-grpc", "handwritten", "litserve"]
GRPC = "torchport-grpc"
BASELINE = "handwritten"
#: model -> (config, overrides): the digits CNN as shipped (fewer epochs), the wide MLP of serve_servers/
MODELS: dict[str, tuple[Path, list[str]]] = {
    "digits": (ROOT / "examples" / "digits.yaml", ["train.epochs=3", "export.aoti=false"]),
    "wide_mlp": (SERVERS_DIR / "wide_mlp.yaml", ["export.aoti=false"]),
}
TARGET_C1 = 0.9  # torchport / hand-written requests/s at concurrency 1, every model
TARGET_WIDE_C64 = 4.0  # torchport / hand-written requests/s on the wide MLP at concurrency 64
TARGET_GRPC = 1.0  # torchport over gRPC / over REST requests/s at concurrency 1 and 64, every model


class BenchError(Exception):
    """A one-line reason the benchmark cannot run."""


@dataclass
class Row:
    model: str
    concurrency: int
    server: str
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_us_per_request: float | None  # the server's processes' CPU time (user + system) over the cell
    ratio: float | None = None  # rps / the hand-written server's rps, same model and concurrency


# --- prerequisites and bundles -------------------------------------------------------------------------------


def check_prerequisites(servers: list[str]) -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed; install it with `apt-get install -y wrk` (Debian's package)")
    if "litserve" in servers and importlib.util.find_spec("litserve") is None:
        raise BenchError(
            "litserve is not installed; install it with `.venv/bin/pip install -e '.[bench]'` "
            "(or leave it out: --servers torchport,handwritten)"
        )


def build_bundle(model: str, run_root: Path, epochs: int | None) -> Path:
    """Train and export ``model`` into ``run_root/model`` unless a bundle of the same config is already there."""
    config_path, overrides = MODELS[model]
    overrides = [*overrides, *([f"train.epochs={epochs}"] if epochs else [])]
    key = hashlib.sha256((config_path.read_text() + "\n".join(overrides)).encode()).hexdigest()[:16]
    run_dir = run_root / model
    stamp = run_dir / "serve-bench.key"
    bundle = run_dir / "bundle"
    if (bundle / "manifest.json").exists() and stamp.exists() and stamp.read_text() == key:
        return bundle
    from rich.console import Console

    from torchport.config import load_config
    from torchport.pipeline import export_stage
    from torchport.train.loop import train

    print(f"building the {model} bundle in {run_dir} (cached for the next run)", flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    console = Console(quiet=True)
    train(load_config(config_path, overrides), run_dir, console=console)
    export_stage(run_dir, console)
    stamp.write_text(key)
    print(f"built {bundle} in {time.perf_counter() - started:.0f} s", flush=True)
    return bundle


def request_body(bundle: Path, path: Path) -> np.ndarray:
    """Write the v2 JSON body of one real digits image (raw pixels, batch 1) to ``path``; return the array."""
    from sklearn.datasets import load_digits

    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = manifest["inputs"][0]
    image = load_digits().images[7].astype(np.float32)[None, None]  # (1, 1, 8, 8)
    if [1, *spec["shape"][1:]] != list(image.shape):
        raise BenchError(f"{bundle}: input {spec['shape']} is not a digits image (1, 8, 8)")
    body = {"inputs": [{"name": spec["name"], "shape": list(image.shape), "datatype": "FP32"}]}
    body["inputs"][0]["data"] = image.ravel().tolist()
    path.write_text(json.dumps(body, separators=(",", ":")))
    return image


def reference_logits(bundle: Path, image: np.ndarray) -> np.ndarray:
    from torchport.sessions import onnxruntime_session

    session = onnxruntime_session(bundle / "model.onnx")
    return np.asarray(session.run(["logits"], {session.get_inputs()[0].name: image})[0])


# --- servers -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(server: str, bundle: Path, port: int, args: argparse.Namespace, grpc_port: int = 0) -> list[str]:
    common = [str(bundle), "--port", str(port), "--threads", str(args.threads)]
    if server == GRPC:
        return [*server_command("torchport", bundle, port, args), "--grpc-port", str(grpc_port)]
    if server == "torchport":
        return [
            sys.executable,
            "-m",
            "torchport.serve",
            *common,
            "--no-variants",
            "--no-access-log",
            "--log-level",
            "warning",
            "--max-batch-size",
            str(args.max_batch_size),
            "--max-batch-delay-ms",
            str(args.max_batch_delay_ms),
        ]
    if server == "handwritten":
        return [sys.executable, str(SERVERS_DIR / "handwritten.py"), *common]
    batching = ["--max-batch-size", str(args.max_batch_size), "--batch-timeout-ms", str(args.max_batch_delay_ms)]
    return [sys.executable, str(SERVERS_DIR / "litserve_server.py"), *common, *batching]


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """One server process (and its children, in their own process group), ready once it answers an infer call."""

    def __init__(self, name: str, command: list[str], log: Path, url: str, body: bytes) -> None:
        self.name, self.url, self.body, self.log = name, url, body, log
        self.log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True, env=environment
        )

    def wait_ready(self, timeout: float = 180.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.process.returncode}: {self._tail()}")
            try:
                status, answer = post(self.url, self.body, timeout=30)
                if status == 200:
                    return answer
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not answer within {timeout:.0f} s: {self._tail()}")
            time.sleep(0.2)

    def _tail(self) -> str:
        self.log_file.flush()
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "(no output)"

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of every live process in the server's process group (Linux /proc)."""
        pgid = self.process.pid
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        try:
            entries = os.listdir("/proc")
        except OSError:
            return None
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
                total += int(fields[11]) + int(fields[12])
        return total / tick

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # LitServe's workers may outlive their parent for a moment: the group goes with it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log_file.close()


# --- load ----------------------------------------------------------------------------------------------------


def wrk(url: str, body_file: Path, concurrency: int, seconds: float, threads: int) -> dict[str, Any]:
    """One closed-loop wrk run; the numbers its Lua ``done()`` prints."""
    command = [
        "wrk",
        "-t",
        str(max(1, min(threads, concurrency))),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        url,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 90,
        env={**os.environ, "WRK_BODY_FILE": str(body_file)},
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return dict(json.loads(line.removeprefix("WRK_RESULT ")))
    raise BenchError(f"wrk gave no result (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")


Load = Callable[[int, float], dict[str, Any]]  # (concurrency, seconds) -> the fields of wrk's WRK_RESULT line


def measure(
    server: Server,
    load: Load,
    model: str,
    concurrency: int,
    round_: int,
    args: argparse.Namespace,
    failed: Callable[[], int] | None = None,
) -> Row:
    """One cell; ``failed``, when given, is the server's own count of failed calls (for a load generator that
    cannot see them: h2load reads HTTP statuses, and gRPC answers every call 200)."""
    if args.warmup > 0:
        load(concurrency, args.warmup)
    failed_before = failed() if failed is not None else 0
    cpu_before = server.cpu_seconds()
    result = load(concurrency, args.duration)
    cpu_after = server.cpu_seconds()
    if failed is not None:
        result["status"] = failed() - failed_before
    seconds = result["duration_us"] / 1e6
    requests = int(result["requests"])
    cpu = None
    if cpu_before is not None and cpu_after is not None and requests:
        cpu = (cpu_after - cpu_before) / requests * 1e6
    return Row(
        model=model,
        concurrency=concurrency,
        server=server.name,
        round=round_,
        requests=requests,
        seconds=round(seconds, 3),
        # 2xx answers only: a server that fails fast (503s) must not look faster for it
        rps=round(max(requests - int(result["status"]), 0) / seconds, 1) if seconds else 0.0,
        p50_ms=round(result["p50_us"] / 1000, 3),
        p99_ms=round(result["p99_us"] / 1000, 3),
        non_2xx=int(result["status"]),
        socket_errors=sum(int(result[k]) for k in ("connect", "read", "write", "timeout")),
        cpu_us_per_request=round(cpu, 1) if cpu is not None else None,
    )


def check_answer(name: str, answer: bytes, expected: np.ndarray) -> None:
    """Every server must return the same logits as ONNX Runtime in-process for the benchmark's body."""
    outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
    check_logits(name, np.asarray(outputs["logits"]["data"], dtype=np.float32).reshape(expected.shape), expected)


def check_logits(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4, rtol=1e-3):
        raise BenchError(f"{name} answered logits {got.ravel()[:3]}..., expected {expected.ravel()[:3]}...")


# --- results -------------------------------------------------------------------------------------------------


def summarise(rows: list[Row]) -> list[Row]:
    """One row per (model, concurrency, server): the median over rounds (errors summed); ratios to hand-written."""
    groups: dict[tuple[str, int, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.model, row.concurrency, row.server), []).append(row)
    summary: list[Row] = []
    for (model, concurrency, server), group in groups.items():
        cpus = [r.cpu_us_per_request for r in group if r.cpu_us_per_request is not None]
        summary.append(
            Row(
                model=model,
                concurrency=concurrency,
                server=server,
                round=len(group),
                requests=sum(r.requests for r in group),
                seconds=round(sum(r.seconds for r in group), 3),
                rps=round(statistics.median(r.rps for r in group), 1),
                p50_ms=round(statistics.median(r.p50_ms for r in group), 3),
                p99_ms=round(statistics.median(r.p99_ms for r in group), 3),
                non_2xx=sum(r.non_2xx for r in group),
                socket_errors=sum(r.socket_errors for r in group),
                cpu_us_per_request=round(statistics.median(cpus), 1) if cpus else None,
            )
        )
    baseline = {(r.model, r.concurrency): r.rps for r in summary if r.server == BASELINE}
    for row in summary:
        base = baseline.get((row.model, row.concurrency))
        row.ratio = round(row.rps / base, 2) if base else None
    return summary


def targets(summary: list[Row]) -> list[dict[str, Any]]:
    ratio: dict[tuple[str, int], float | None] = {
        (r.model, r.concurrency): r.ratio for r in summary if r.server == "torchport"
    }
    checks = [(f"{m} c=1: torchport >= {TARGET_C1}x hand-written", (m, 1), TARGET_C1) for m in MODELS]
    wide = f"wide_mlp c=64: torchport >= {TARGET_WIDE_C64:.0f}x hand-written"
    checks.append((wide, ("wide_mlp", 64), TARGET_WIDE_C64))
    rest = {(r.model, r.concurrency): r.rps for r in summary if r.server == "torchport"}
    for row in summary:
        if row.server == GRPC and row.concurrency in (1, 64) and rest.get((row.model, row.concurrency)):
            key = (f"{GRPC}:{row.model}", row.concurrency)
            ratio[key] = round(row.rps / rest[(row.model, row.concurrency)], 2)
            text = f"{row.model} c={row.concurrency}: gRPC >= {TARGET_GRPC:g}x REST (torchport-grpc / torchport)"
            checks.append((text, key, TARGET_GRPC))
    results = []
    for text, key, goal in checks:
        got = ratio.get(key)
        verdict = "n/a" if got is None else ("PASS" if got >= goal else "FAIL")
        results.append({"target": text, "ratio": got, "goal": goal, "result": verdict})
    return results


def print_table(summary: list[Row], checks: list[dict[str, Any]], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    table = Table(title="torchport serve vs hand-written FastAPI+ORT vs LitServe (closed loop, wrk, 1 sample/request)")
    for column in ("model", "conc", "server", "req/s", "p50 ms", "p99 ms", "non-2xx", "sock err", "CPU µs/req"):
        table.add_column(column, justify="left" if column in ("model", "server") else "right")
    table.add_column("× hand-written", justify="right")
    order = {name: i for i, name in enumerate(SERVERS)}
    previous: tuple[str, int] | None = None
    for row in sorted(summary, key=lambda r: (list(MODELS).index(r.model), r.concurrency, order[r.server])):
        if previous is not None and previous != (row.model, row.concurrency):
            table.add_section()
        previous = (row.model, row.concurrency)
        table.add_row(
            row.model,
            str(row.concurrency),
            row.server,
            f"{row.rps:,.0f}",
            f"{row.p50_ms:.2f}",
            f"{row.p99_ms:.2f}",
            str(row.non_2xx),
            str(row.socket_errors),
            "-" if row.cpu_us_per_request is None else f"{row.cpu_us_per_request:,.0f}",
            "-" if row.ratio is None else f"{row.ratio:.2f}",
        )
    console.print(table)
    for check in checks:
        ratio = "-" if check["ratio"] is None else f"{check['ratio']:.2f}x"
        console.print(f"target {check['target']}: {ratio} -> {check['result']}")
    for note in notes:
        console.print(f"note: {note}")


def parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds of load before each cell")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in parse_list(s)], default=[1, 8, 64])
    parser.add_argument("--models", type=parse_list, default=list(MODELS), help="digits,wide_mlp")
    parser.add_argument("--servers", type=parse_list, default=SERVERS, help="torchport,handwritten,litserve")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every server's cells; the median is shown")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads, every server")
    parser.add_argument("--max-batch-size", type=int, default=64, help="torchport and LitServe (default 64)")
    parser.add_argument("--max-batch-delay-ms", type=float, default=2.0, help="torchport and LitServe (2 ms)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--grpc-client",
        choices=["auto", "h2load", "python"],
        default="auto",
        help="the gRPC cells' load generator (auto: h2load when installed, else the Python grpc.aio client)",
    )
    parser.add_argument("--taskset", metavar="CPUS", help="pin every server to these CPUs (taskset -c CPUS)")
    parser.add_argument("--epochs", type=int, help="train the models for this many epochs (default: as configured)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "serve-bench", help="bundles and logs")
    parser.add_argument("--json", type=Path, help="write the rows and verdicts here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a measured target is missed")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def measure_server(
    name: str,
    model: str,
    bundle: Path,
    served_name: str,
    expected: np.ndarray,
    body_file: Path,
    round_: int,
    args: argparse.Namespace,
) -> list[Row]:
    """Start server ``name`` on ``bundle``, check its answer, measure every concurrency, stop it."""
    port, grpc_port = free_port(), free_port() if name == GRPC else 0
    url = f"http://127.0.0.1:{port}/v2/models/{served_name}/infer"
    command = server_command(name, bundle, port, args, grpc_port)
    if args.taskset:
        command = ["taskset", "-c", args.taskset, *command]
    server = Server(name, command, args.run_dir / f"{model}.{name}.log", url, body_file.read_bytes())
    rows = []
    try:
        check_answer(name, server.wait_ready(), expected)
        load: Load = lambda concurrency, seconds: wrk(url, body_file, concurrency, seconds, args.wrk_threads)  # noqa: E731
        failed = None
        if name == GRPC:
            load, failed = grpc_load(port, grpc_port, served_name, body_file, expected, args)
        for concurrency in args.concurrency:
            row = measure(server, load, model, concurrency, round_, args, failed)
            rows.append(row)
            print(
                f"round {round_} {model} c={concurrency} {name}: {row.rps:,.0f} req/s, "
                f"p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, non-2xx {row.non_2xx}",
                flush=True,
            )
    finally:
        server.stop()
    return rows


def grpc_load(
    port: int, grpc_port: int, served_name: str, body_file: Path, expected: np.ndarray, args: argparse.Namespace
) -> tuple[Load, Callable[[], int] | None]:
    """The gRPC cells' load (h2load or the Python client) on the same image, once the gRPC answer is checked; and,
    for h2load, the server's count of failed gRPC calls (from /metrics; the calls h2load abandons as it stops,
    CANCELLED, are not failures)."""
    tensor = json.loads(body_file.read_text())["inputs"][0]
    image = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    input_name = tensor["name"]
    request, framed = grpc_cells.write_request(served_name, input_name, image, body_file.with_suffix(".pb"))
    check_logits(GRPC, grpc_cells.infer_logits(grpc_port, request), expected)
    if args.grpc_client == "h2load":

        def failed() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
                text = response.read().decode()
            lines = [line for line in text.splitlines() if line.startswith("torchport_errors_total{")]
            grpc = [line for line in lines if 'protocol="grpc"' in line and 'code="CANCELLED"' not in line]
            return sum(int(float(line.rsplit(" ", 1)[1])) for line in grpc)

        return (lambda concurrency, seconds: grpc_cells.h2load(grpc_port, framed, concurrency, seconds)), failed
    return (lambda concurrency, seconds: grpc_cells.python_client(grpc_port, request, concurrency, seconds)), None


def run(args: argparse.Namespace) -> int:
    unknown = [m for m in args.models if m not in MODELS] + [s for s in args.servers if s not in SERVERS]
    if unknown:
        raise BenchError(f"unknown model or server {unknown}; models {list(MODELS)}, servers {SERVERS}")
    if args.taskset and shutil.which("taskset") is None:
        raise BenchError("--taskset needs taskset (util-linux)")
    check_prerequisites(args.servers)
    try:
        args.grpc_client = grpc_cells.client_name(args.grpc_client)
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    args.run_dir.mkdir(parents=True, exist_ok=True)
    bundles = {model: build_bundle(model, args.run_dir, args.epochs) for model in args.models}
    load_before = os.getloadavg()
    rows: list[Row] = []
    for round_ in range(1, args.rounds + 1):
        for model, bundle in bundles.items():
            body_file = args.run_dir / f"{model}.body.json"
            expected = reference_logits(bundle, request_body(bundle, body_file))
            served_name = json.loads((bundle / "manifest.json").read_text())["name"]
            for name in args.servers:
                rows += measure_server(name, model, bundle, served_name, expected, body_file, round_, args)
    load_after = os.getloadavg()
    summary = summarise(rows)
    checks = targets(summary)
    notes = [
        f"{os.cpu_count()} CPUs; 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        "(another process on the machine lowers every server's numbers, and the ratios less)",
        f"ORT intra-op threads {args.threads} for every server; batching: max {args.max_batch_size} samples, "
        f"{args.max_batch_delay_ms} ms; wrk threads {args.wrk_threads}; {args.duration:g} s per cell after "
        f"{args.warmup:g} s of warm-up; {args.rounds} round(s)",
    ]
    if GRPC in args.servers:
        notes.append(
            f"{GRPC}: the torchport server with --grpc-port, loaded by {args.grpc_client} over one HTTP/2 connection "
            "with <conc> calls in flight (REST: wrk, <conc> connections); non-2xx there counts failed gRPC calls"
        )
    print_table(summary, checks, notes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after},
            "rows": [asdict(r) for r in summary],
            "rounds": [asdict(r) for r in rows],
            "targets": checks,
            "notes": notes,
        }
        args.json.write_text(json.dumps(document, indent=2))
        print(f"wrote {args.json}")
    missed = any(check["result"] == "FAIL" for check in checks)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
