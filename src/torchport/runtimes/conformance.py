"""Cross-runtime conformance: the same golden inputs through every runtime, compared with PyTorch's outputs.

``python -m torchport.runtimes.conformance BUNDLE [--runtimes all|python,node,...] [--json FILE]`` is the same
as ``torchport conformance``. Each runner runs in its own process with a timeout, writes ``result.json`` and raw
outputs into a temporary folder, and this module compares those with ``golden/``. fp32 artifacts must match within
atol/rtol (the bundle's verification tolerance, else 1e-4/1e-3); INT8/FP16 variants pass on finite outputs of
the right shape and, for classifiers, argmax agreement of at least 90 % with the fp32 reference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from torchport.bundle.manifest import DTYPES, Artifact, Bundle, ConformanceResult, OutputParity, read_bundle
from torchport.errors import TorchportError, UsageError
from torchport.progress import working
from torchport.registry import CLIENTS, RUNTIMES
from torchport.runtimes.base import Runtime, RuntimeMissing, install_files, run_process_group
from torchport.verify.parity import Tolerance, compare

if TYPE_CHECKING:
    from rich.console import Console

MIN_REDUCED_AGREEMENT = 0.9
SERVER_HELP = (
    "also run the v2 clients (csharp, r, java-v2) against this torchport serve URL of the bundle, or 'local' to "
    "start one on 127.0.0.1 for the run"
)


def choose(spec: str, server: str | None = None) -> tuple[list[Runtime], bool]:
    """Runtimes named by ``spec`` ('all' or 'python,node'); the flag says whether they were named explicitly.
    'all' takes the v2 clients too when there is a ``server`` to call."""
    known: dict[str, Runtime] = {
        name: registry.get(name) for registry in (RUNTIMES, CLIENTS) for name in registry.names()
    }
    if spec.strip() == "all":
        return [r for r in known.values() if server or not r.over_server], False
    names = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(f"--runtimes: unknown runtime '{','.join(unknown)}'; choose from all, {', '.join(known)}")
    chosen = [known[name] for name in names]
    needs_server = [r.name for r in chosen if r.over_server]
    if needs_server and not server:
        raise UsageError(
            f"--runtimes: '{needs_server[0]}' is a v2 client: give --server URL (a running torchport serve of this "
            "bundle) or --server local"
        )
    return chosen, True


def _tolerance(bundle: Bundle, artifact: Artifact) -> Tolerance:
    for entry in bundle.manifest.verification:
        if entry.artifact == artifact.path and entry.judged_by == "parity":
            return Tolerance(atol=entry.atol, rtol=entry.rtol)
    return Tolerance()


def _read_outputs(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    result_path = out / "result.json"
    if not result_path.is_file():
        raise TorchportError("the runner wrote no result.json")
    result = json.loads(result_path.read_text())
    arrays = {}
    for entry in result["outputs"]:
        if entry["dtype"] not in DTYPES:
            raise TorchportError(f"output '{entry['name']}' has dtype {entry['dtype']}, not one of {list(DTYPES)}")
        raw = (out / Path(entry["path"]).name).read_bytes()
        array = np.frombuffer(raw, dtype=DTYPES[entry["dtype"]])
        if array.size != int(np.prod(entry["shape"])):
            raise TorchportError(f"output '{entry['name']}' holds {array.size} values for shape {entry['shape']}")
        arrays[entry["name"]] = array.reshape(entry["shape"])
    return result, arrays


def read_golden(bundle: Bundle) -> dict[str, np.ndarray]:
    """The bundle's golden outputs by name, read and checksummed once for every runtime and artifact."""
    return {tensor.name: bundle.read_tensor(tensor) for tensor in bundle.manifest.golden.outputs}


def judge(
    bundle: Bundle,
    artifact: Artifact,
    arrays: dict[str, np.ndarray],
    tol: Tolerance,
    golden_outputs: Mapping[str, np.ndarray],
) -> tuple[dict[str, OutputParity], list[str]]:
    """Per golden output (``golden_outputs``, from :func:`read_golden`): the parity numbers, and a line for each
    output that fails."""
    classifier = bundle.manifest.task == "classification"
    reduced = artifact.precision != "fp32"
    parities: dict[str, OutputParity] = {}
    problems: list[str] = []
    for golden in bundle.manifest.golden.outputs:
        want = golden_outputs[golden.name]
        got = arrays.get(golden.name)
        if got is None:
            problems.append(f"output '{golden.name}' is missing")
            continue
        parity = compare(got, want, tol, argmax=classifier)
        if reduced:
            agreement = parity.argmax_agreement
            finite = bool(np.isfinite(got.astype(np.float64)).all()) and got.shape == want.shape
            ok = finite and (agreement is None or agreement >= MIN_REDUCED_AGREEMENT)
            parity = parity.model_copy(update={"passed": ok})
        parities[golden.name] = parity
        if not parity.passed:
            problems.append(
                f"output '{golden.name}': max abs error {parity.max_abs:.3g}, needs atol {parity.needed_atol:.3g} "
                f"> {tol.atol:g} (rtol {tol.rtol:g})"
            )
    return parities, problems


def run_one(
    runtime: Runtime,
    bundle: Bundle,
    artifact: Artifact,
    runner_dir: Path,
    golden_outputs: Mapping[str, np.ndarray],
    server: str | None = None,
    console: Console | None = None,
) -> ConformanceResult:
    """Run one runner on one artifact (a client: against ``server``, which serves that artifact) in a subprocess
    and judge its outputs against ``golden_outputs``; on a terminal ``console`` a spinner shows it building and
    running."""
    tol = _tolerance(bundle, artifact)
    base = {
        "runtime": runtime.name,
        "engine": runtime.engine,
        "artifact": artifact.path,
        "precision": artifact.precision,
        "atol": tol.atol,
        "rtol": tol.rtol,
        "checked": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(prefix=f"torchport-{runtime.name}-") as tmp:
        out = Path(tmp) / "out"
        target = server if runtime.over_server and server else artifact.path
        start = time.perf_counter()
        try:
            with working(console, f"building the {runtime.name} runner"):
                argv = runtime.command(bundle.root.resolve(), runner_dir.resolve(), target, out)  # may build it
            with working(console, f"running the {runtime.name} runner on {artifact.path}"):
                code, stdout, stderr = run_process_group(argv, runtime.timeout_s, {**os.environ, **runtime.env()})
        except subprocess.TimeoutExpired:
            return ConformanceResult(status="error", reason=f"timed out after {runtime.timeout_s:.0f} s", **base)
        except (OSError, TorchportError) as exc:
            return ConformanceResult(status="error", reason=str(exc), **base)
        seconds = time.perf_counter() - start
        if code != 0:
            lines = [line for line in (stderr + stdout).strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit code {code}"
            return ConformanceResult(status="error", reason=reason[:500], seconds=seconds, **base)
        try:
            result, arrays = _read_outputs(out)
        except (OSError, ValueError, KeyError, TorchportError) as exc:
            return ConformanceResult(status="error", reason=f"unreadable result: {exc}", seconds=seconds, **base)
    parities, problems = judge(bundle, artifact, arrays, tol, golden_outputs)
    base["engine"] = str(result.get("runtime", runtime.engine))
    return ConformanceResult(
        version=str(result.get("version", "")),
        status="failed" if problems else "passed",
        reason="; ".join(problems),
        outputs=parities,
        latency=result.get("latency", []),
        seconds=seconds,
        **base,
    )


def run_conformance(
    bundle_dir: Path,
    runtimes: Iterable[Runtime],
    explicit: bool,
    save: bool = True,
    server: str | None = None,
    console: Console | None = None,
) -> list[ConformanceResult]:
    """Run each runtime on each artifact it supports; a missing prerequisite is an error only when ``explicit``.

    v2 clients call ``server`` (a URL, or 'local': a `torchport serve` of this bundle started for the run) with
    the artifact the server answers with by default, the bundle's first fp32 ONNX model. On a terminal
    ``console`` a spinner names each runner while it builds and runs.
    """
    bundle = read_bundle(bundle_dir)
    chosen = list(runtimes)
    if explicit:
        for runtime in chosen:
            reason = runtime.missing()
            if reason:
                raise RuntimeMissing(f"runtime '{runtime.name}' cannot run here: {reason}")
    with contextlib.ExitStack() as stack:
        if server == "local" and any(r.over_server for r in chosen):
            server = _start_local_server(stack, bundle.root)
        results = _run_all(bundle, chosen, explicit, server, console)
    if save:
        bundle.manifest.conformance = results
        bundle.save()
    return results


def _start_local_server(stack: contextlib.ExitStack, bundle_dir: Path) -> str:
    """A `torchport serve` of ``bundle_dir`` on 127.0.0.1 for as long as ``stack`` is open; its URL."""
    from torchport.serve.local import local_server

    log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="torchport-serve-"))) / "serve.log"
    _, port = stack.enter_context(local_server([bundle_dir], log))
    return f"http://127.0.0.1:{port}"


def _run_all(
    bundle: Bundle, chosen: list[Runtime], explicit: bool, server: str | None, console: Console | None = None
) -> list[ConformanceResult]:
    results: list[ConformanceResult] = []
    golden_outputs: dict[str, np.ndarray] | None = None  # read once, when the first runner is about to run
    for runtime in chosen:
        artifacts = [
            a for a in bundle.manifest.artifacts if a.kind in runtime.kinds and a.precision in runtime.precisions
        ][: 1 if runtime.over_server else None]
        if not artifacts:
            reason: str | None = f"the bundle has no {'/'.join(runtime.kinds)} artifact"
        elif runtime.over_server and not server:
            reason = "a v2 client: needs --server URL (or local)"
        else:  # explicitly named runtimes were all checked above
            reason = None if explicit else runtime.missing()
        if reason:
            first = artifacts[0].path if artifacts else "-"
            results.append(
                ConformanceResult(
                    runtime=runtime.name,
                    engine=runtime.engine,
                    artifact=first,
                    status="skipped",
                    reason=reason,
                    atol=0.0,
                    rtol=0.0,
                )
            )
            continue
        runner_dir = install_files(runtime, bundle.root)
        if golden_outputs is None:
            golden_outputs = read_golden(bundle)
        results.extend(
            run_one(runtime, bundle, artifact, runner_dir, golden_outputs, server, console) for artifact in artifacts
        )
    return results


def failed(results: list[ConformanceResult]) -> list[ConformanceResult]:
    return [r for r in results if r.status in ("failed", "error")]


def latency_at(result: ConformanceResult, batch: int) -> str:
    hit = next((entry for entry in result.latency if entry.batch == batch), None)
    return f"{hit.median_ms:.3f}" if hit else "-"


def table(results: list[ConformanceResult]) -> str:
    """A plain-text table: runtime, version, artifact, errors, argmax agreement, status, latency per batch."""
    batches = sorted({entry.batch for r in results for entry in r.latency})
    header = ["runtime", "engine", "version", "artifact", "max abs", "max rel", "argmax", "status"]
    header += [f"ms@{b}" for b in batches]
    rows = [header]
    for r in results:
        parities = list(r.outputs.values())
        agreements = [p.argmax_agreement for p in parities if p.argmax_agreement is not None]
        rows.append(
            [
                r.runtime,
                r.engine,
                r.version.split("-")[0],
                r.artifact,
                f"{max(p.max_abs for p in parities):.2e}" if parities else "-",
                f"{max(p.max_rel for p in parities):.2e}" if parities else "-",
                f"{min(agreements):.3f}" if agreements else "-",
                r.status.upper(),
                *[latency_at(r, b) for b in batches],
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        if r.status != "passed":
            lines.append(f"{r.status.upper()} {r.runtime} {r.artifact}: {r.reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The `torchport conformance` verb: print the table, write --json, exit 1 on a failure, 2 on bad usage."""
    parser = argparse.ArgumentParser(prog="torchport conformance", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--runtimes", default="all", help=f"all, or a comma list of {', '.join(RUNTIMES.names())}")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--server", help=SERVER_HELP)
    args = parser.parse_args(argv)
    try:
        return conformance_command(args.bundle, args.runtimes, args.json, args.server)
    except TorchportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


@dataclass(frozen=True)
class ConformanceReport:
    """Each runtime's run of the golden inputs, one result per runtime and artifact; ``passed`` unless one failed
    or errored (skipped runtimes do not count). ``str(report)`` is the table `torchport conformance` prints."""

    results: list[ConformanceResult]

    @property
    def passed(self) -> bool:
        return not failed(self.results)

    def table(self) -> str:
        return table(self.results)

    def summary(self) -> str:
        bad = failed(self.results)
        ran = [r for r in self.results if r.status != "skipped"]
        skipped = len(self.results) - len(ran)
        return f"conformance: {len(ran) - len(bad)} of {len(ran)} runtime runs passed" + (
            f", {skipped} skipped" if skipped else ""
        )

    def __str__(self) -> str:
        return f"{self.table()}\n{self.summary()}"


def check_conformance(
    bundle: Path, runtimes: str = "all", server: str | None = None, save: bool = False, console: Console | None = None
) -> ConformanceReport:
    """Run the runtimes ``runtimes`` names ('all' or 'python,node'); the results go into the manifest if ``save``.
    On a terminal ``console`` a spinner shows each runner building and running."""
    chosen, explicit = choose(runtimes, server)
    return ConformanceReport(run_conformance(bundle, chosen, explicit, save=save, server=server, console=console))


def conformance_command(bundle: Path, runtimes: str, json_path: Path | None, server: str | None = None) -> int:
    from rich.console import Console

    # the spinner goes to stderr, and only when that is a terminal: stdout keeps just the table and summary
    report = check_conformance(bundle, runtimes, server, save=True, console=Console(stderr=True))
    print(report.table())
    if json_path is not None:
        json_path.write_text(json.dumps([r.model_dump() for r in report.results], indent=2) + "\n")
    print(report.summary())
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
