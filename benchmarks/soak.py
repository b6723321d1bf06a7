"""Soak: `torchport serve` under steady load, under overload with a small queue, and holding idle connections.

Three phases against the digits CNN bundle (built and cached as by ``benchmarks/serve.py``), each bounded in time,
all traffic to 127.0.0.1, the load from ``wrk`` (one digits image per request, v2 JSON, closed loop):

1. steady: ``--steady-seconds`` (60) at concurrency 64 on a server with the default queue: the unloaded throughput;
2. overload: ``--overload-seconds`` (20) at concurrency 256 on a second server started with ``--max-queue 4``:
   the goodput (200s per second) while most requests are shed with 503;
3. idle: ``--idle`` (1,000) connections opened to that second server that never send a byte, while ordinary
   requests keep coming one at a time; how many of those are served, and how many idle connections the server
   has closed by its header timeout (``--header-timeout``, 10 s by default) plus two seconds.

It prints requests/s, the goodput under overload as a share of the unloaded throughput (goal >= 50 %), every
non-2xx answer other than 503 (goal: none), socket errors, and each server's resident memory after warm-up and at
the end (goal: growth < 10 %). On a shared 2-core machine the load generator and the server share the CPUs and
other work moves single runs by +-20 %: read the ratios, not the absolute figures.

    apt-get install -y wrk
    .venv/bin/python benchmarks/soak.py
    .venv/bin/python benchmarks/soak.py --steady-seconds 10 --overload-seconds 5 --idle 200 --json runs/soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serve import (  # noqa: E402  (the serving benchmark's bundle, body and server helpers)
    ROOT,
    BenchError,
    Server,
    build_bundle,
    check_answer,
    free_port,
    post,
    reference_logits,
    request_body,
)

GOODPUT_GOAL = 0.5  # 200s/s under overload / unloaded 200s/s
RSS_GROWTH_GOAL = 0.10

#: wrk script: POST the body in $WRK_BODY_FILE, count answers by status in every thread, print one JSON line
LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.body = file:read("*a")
file:close()
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local parts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      parts[#parts + 1] = string.format('"%d": %d', status, count)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_SOAK {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, '
      .. '"p50_us": %d, "p99_us": %d, "statuses": [{%s}]}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(parts, "}, {")))
end
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def wrk(url: str, body_file: Path, script: Path, concurrency: int, seconds: float, threads: int) -> dict[str, Any]:
    command = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s"]
    command += ["--timeout", "10s", "-s", str(script), url]
    env = {**os.environ, "WRK_BODY_FILE": str(body_file)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, env=env, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_SOAK "):
            result = json.loads(line.removeprefix("WRK_SOAK "))
            statuses: dict[str, int] = {}
            for part in result.pop("statuses"):  # one {status: count} per thread and status
                for status, count in part.items():
                    statuses[status] = statuses.get(status, 0) + count
            result["statuses"] = dict(sorted(statuses.items()))
            result["seconds"] = result["duration_us"] / 1e6
            result["socket_errors"] = sum(result[k] for k in ("connect", "read", "write", "timeout"))
            return dict(result)
    raise BenchError(f"wrk gave no result (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")


def summarise_load(name: str, result: dict[str, Any]) -> dict[str, Any]:
    statuses = result["statuses"]
    seconds = result["seconds"]
    ok = statuses.get("200", 0)
    other = {s: n for s, n in statuses.items() if not s.startswith("2") and s != "503"}
    row = {
        "phase": name,
        "seconds": round(seconds, 1),
        "requests": result["requests"],
        "req_per_s": round(result["requests"] / seconds, 1),
        "ok_per_s": round(ok / seconds, 1),
        "shed_503": statuses.get("503", 0),
        "other_non_2xx": other,
        "socket_errors": result["socket_errors"],
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
    }
    print(
        f"{name}: {row['req_per_s']:,.0f} req/s, {row['ok_per_s']:,.0f} x 200/s, {row['shed_503']} x 503, "
        f"other non-2xx {other or 0}, socket errors {row['socket_errors']}, p50 {row['p50_ms']} ms, "
        f"p99 {row['p99_ms']} ms",
        flush=True,
    )
    return row


def idle_phase(port: int, url: str, body: bytes, count: int, header_timeout: float) -> dict[str, Any]:
    """``count`` connections that send nothing, and ordinary requests one at a time meanwhile; how many idle
    connections the server has closed by ``header_timeout`` + 2 s, and how the ordinary requests fared."""
    idle: list[socket.socket] = []
    refused = 0
    for _ in range(count):
        try:
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            refused += 1
    opened = time.monotonic()
    answers: dict[str, int] = {}
    stop = threading.Event()

    def ordinary() -> None:
        while not stop.is_set():
            try:
                status, _ = post(url, body, timeout=5)
                key = str(status)
            except OSError as exc:
                key = type(exc).__name__
            answers[key] = answers.get(key, 0) + 1
            time.sleep(0.05)

    client = threading.Thread(target=ordinary, daemon=True)
    client.start()
    open_now = set(idle)
    closed_at: list[float] = []
    deadline = opened + header_timeout + 2
    try:
        while open_now and time.monotonic() < deadline:
            readable, _, _ = select.select(list(open_now), [], [], 0.2)
            for sock in readable:
                with contextlib.suppress(OSError):
                    if sock.recv(1024):
                        continue  # an answer to a request it never sent would be a bug; keep watching
                open_now.discard(sock)
                closed_at.append(time.monotonic() - opened)
    finally:
        stop.set()
        client.join(timeout=10)
        for sock in idle:
            sock.close()
    row = {
        "phase": "idle",
        "idle_connections": len(idle),
        "refused_at_connect": refused,
        "closed_by_server": len(closed_at),
        "closed_after_s": round(max(closed_at), 1) if closed_at else None,
        "ordinary_answers": answers,
    }
    print(
        f"idle: {len(idle)} idle connections, {len(closed_at)} closed by the server within {header_timeout + 2:g} s "
        f"(the last after {row['closed_after_s']} s); ordinary requests meanwhile: {answers}",
        flush=True,
    )
    return row


def start(bundle: Path, log: Path, url_path: str, body: bytes, extra: list[str], args: argparse.Namespace) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "torchport.serve", str(bundle), "--port", str(port), "--threads", "1"]
    command += ["--no-variants", "--no-access-log", "--log-level", "warning"]
    command += ["--header-timeout", str(args.header_timeout), *extra]
    if args.taskset:
        command = ["taskset", "-c", args.taskset, *command]
    return Server("torchport", command, log, f"http://127.0.0.1:{port}{url_path}", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="phase 1 at concurrency 64 (default 60)")
    parser.add_argument("--overload-seconds", type=float, default=20.0, help="phase 2 at concurrency 256 (20)")
    parser.add_argument("--max-queue", type=int, default=4, help="the overloaded server's --max-queue (default 4)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections in phase 3 (default 1000)")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="both servers' --header-timeout (10)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds of load before RSS is read")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--taskset", metavar="CPUS", help="pin the servers to these CPUs (taskset -c CPUS)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "serve-bench", help="bundle cache, logs")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed; install it with `apt-get install -y wrk` (Debian's package)")
    args.run_dir.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle("digits", args.run_dir, None)
    body_file = args.run_dir / "digits.body.json"
    expected = reference_logits(bundle, request_body(bundle, body_file))
    body = body_file.read_bytes()
    name = json.loads((bundle / "manifest.json").read_text())["name"]
    url_path = f"/v2/models/{name}/infer"
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    memory: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "soak.lua"
        script.write_text(LUA)
        phases = [("steady", 64, args.steady_seconds, []), ("overload", 256, args.overload_seconds, None)]
        for phase, concurrency, seconds, extra in phases:
            options = extra if extra is not None else ["--max-queue", str(args.max_queue)]
            server = start(bundle, args.run_dir / f"soak.{phase}.log", url_path, body, options, args)
            try:
                check_answer("torchport", server.wait_ready(), expected)
                wrk(server.url, body_file, script, concurrency, args.warmup, args.wrk_threads)
                rss_start = rss_mb(server.process.pid)
                result = wrk(server.url, body_file, script, concurrency, seconds, args.wrk_threads)
                rows.append({**summarise_load(f"{phase} c={concurrency}", result), "concurrency": concurrency})
                if phase == "overload":
                    port = int(server.url.split(":")[2].split("/")[0])
                    rows.append(idle_phase(port, server.url, body, args.idle, args.header_timeout))
                memory[phase] = (rss_start, rss_mb(server.process.pid))
            finally:
                server.stop()
    load_after = os.getloadavg()
    steady, overload, idle = rows
    goodput = overload["ok_per_s"] / steady["ok_per_s"] if steady["ok_per_s"] else 0.0
    other = {**steady["other_non_2xx"], **overload["other_non_2xx"]}
    ordinary_failed = {k: v for k, v in idle["ordinary_answers"].items() if k != "200"}
    goals = {
        f"goodput under overload >= {GOODPUT_GOAL:.0%} of unloaded": goodput >= GOODPUT_GOAL,
        "no non-2xx other than 503": not other,
        "ordinary requests served while idle connections are held": not ordinary_failed,
        "every idle connection closed by the header timeout": idle["closed_by_server"] == idle["idle_connections"],
    }
    print(f"goodput under overload: {overload['ok_per_s']:,.0f} / {steady['ok_per_s']:,.0f} 200s/s = {goodput:.0%}")
    for phase, (before, after) in memory.items():
        growth = after / before - 1
        goals[f"{phase} server RSS growth < {RSS_GROWTH_GOAL:.0%}"] = growth < RSS_GROWTH_GOAL
        print(f"RSS of the {phase} server: {before:.1f} MB after warm-up, {after:.1f} MB at the end ({growth:+.1%})")
    for goal, met in goals.items():
        print(f"goal {goal}: {'PASS' if met else 'FAIL'}")
    print(
        f"note: {os.cpu_count()} CPUs shared by wrk and the server; 1-min load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after (other work on the machine moves single runs by +-20 %)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after},
            "phases": rows,
            "goodput_ratio": round(goodput, 3),
            "rss_mb": {phase: {"start": round(a, 1), "end": round(b, 1)} for phase, (a, b) in memory.items()},
            "goals": goals,
        }
        args.json.write_text(json.dumps(document, indent=2))
        print(f"wrote {args.json}")
    return 1 if args.strict and not all(goals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
