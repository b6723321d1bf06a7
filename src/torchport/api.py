"""The Python API: every stage of the command line as a typed function for a script or a notebook.

``import torchport as tp``, then ``tp.train``, ``tp.export``, ``tp.verify``, ... Each stage takes paths, or the
result of an earlier stage, which stands for its folder (``os.fspath(result)`` is the run or bundle directory),
and returns a typed result. Quiet by default: nothing is printed unless ``progress=True``, which shows on stderr
what the command line shows. Nothing is written but what a stage is for: ``verify``, ``conformance`` and ``bench``
only measure unless ``save=True``. A stage that writes into a run directory holds its lock, as the CLI's verb does.

Heavy imports (torch, ONNX Runtime) happen inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from torchport.bench import defaults as bench_defaults
from torchport.config import Config, default_run_dir, load_config
from torchport.predict import Bundle
from torchport.runlock import holding
from torchport.serve.settings import DEFAULTS as SERVE_DEFAULTS
from torchport.serve.settings import ServeSettings

if TYPE_CHECKING:
    from rich.console import Console

    from torchport.bench.inference import BenchResult
    from torchport.pipeline import OptimizeReport
    from torchport.runtimes.conformance import ConformanceReport
    from torchport.serving import RunningServer
    from torchport.verify.bundle import VerifyReport

PathLike = str | os.PathLike[str]
"""A path, or a result standing for its folder: a ``TrainResult`` or ``RunResult`` (the run directory), a
``Bundle`` (the bundle directory)."""

__all__ = [
    "Bundle",
    "Config",
    "RunResult",
    "TrainResult",
    "bench",
    "conformance",
    "export",
    "load_config",
    "optimize",
    "run",
    "serve",
    "train",
    "verify",
]


def _console(progress: bool) -> Console:
    """Where a stage's lines go: nowhere by default; with ``progress``, stderr (stdout stays the caller's)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False) if progress else Console(quiet=True)


# --- config --------------------------------------------------------------------------------------------------


def _checked(config: Config | PathLike) -> Config:
    """A config object, or the file it is read from; checked against the code behind its names (blocks,
    optimizer, data files) before any time is spent, as the CLI does."""
    from torchport.validate import check_config

    return check_config(config if isinstance(config, Config) else load_config(Path(config)))


# --- train, export -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """What `train` did: the run directory it wrote, and the summary it wrote there (``summary.json``)."""

    run_dir: Path
    summary: dict[str, Any]

    @property
    def metric(self) -> str:
        """The validation metric that chose the best epoch, e.g. ``val_accuracy`` or ``val_rmse``."""
        return str(self.summary["metric"])

    @property
    def best(self) -> float | None:
        """The best epoch's value of ``metric``."""
        value = self.summary["best"].get(self.metric)
        return None if value is None else float(value)

    def __fspath__(self) -> str:
        return str(self.run_dir)


def train(
    config: Config | PathLike,
    run_dir: PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> TrainResult:
    """Train ``config`` (a Config, or a YAML file) into ``run_dir`` (default ``runs/<name>``).

    A run directory that holds an earlier run's checkpoints is refused unless ``resume`` (continue it) or
    ``overwrite`` (start over, deleting them)."""
    from torchport.train.loop import train as train_loop

    checked = _checked(config)
    where = Path(run_dir) if run_dir is not None else default_run_dir(checked)
    summary = train_loop(checked, where, resume=resume, console=_console(progress), overwrite=overwrite)
    return TrainResult(where, summary)


def export(run_dir: PathLike, *, progress: bool = False) -> Bundle:
    """Export a trained run to ONNX (and model.pt2 when ``export.aoti`` allows and a C++ compiler exists) and
    write its bundle, ``RUN_DIR/bundle``; returns it opened."""
    from torchport.pipeline import export_stage

    where = Path(run_dir)
    with holding(where, "export"):
        export_stage(where, _console(progress))
    return Bundle.open(where / "bundle")


# --- verify, optimize, conformance, bench --------------------------------------------------------------------


def verify(bundle: PathLike, *, save: bool = False, progress: bool = False) -> VerifyReport:
    """Check every artifact of ``bundle`` against PyTorch (or, for a bundle without its run, its golden outputs).

    Writes nothing unless ``save``: then the results go into the manifest, as `torchport verify` does. A failed
    check is ``report.passed == False``, not an exception; a broken bundle raises a BundleError."""
    from torchport.pipeline import show_verification
    from torchport.verify.bundle import verify_report

    where = Path(bundle)
    with holding(where.parent, "verify") if save else contextlib.nullcontext():
        report = verify_report(where, save=save)
    if progress:
        show_verification(report, _console(progress))
    return report


def optimize(bundle: PathLike, *, progress: bool = False) -> OptimizeReport:
    """Add the variants of the run's ``export.variants`` (optimized, int8, fp16, ort) to ``bundle``, each kept
    only if it passes its accuracy gate. Needs the run directory around the bundle (calibration and gate data)."""
    from torchport.pipeline import optimize_report

    where = Path(bundle)
    with holding(where.parent, "optimize"):
        return optimize_report(where, _console(progress))


def conformance(
    bundle: PathLike,
    runtimes: str | Sequence[str] = "all",
    *,
    server: str | None = None,
    save: bool = False,
    progress: bool = False,
) -> ConformanceReport:
    """Run the golden inputs through each runtime's standalone runner (``runtimes``: "all" or names such as
    ``["python", "node"]``) and compare with PyTorch's outputs. "all" skips runtimes this machine cannot run; a
    named one that cannot run raises. ``server``: a `torchport serve` URL (or "local") for the v2 clients.
    Writes nothing unless ``save`` (the results then go into the manifest)."""
    from torchport.runtimes.conformance import check_conformance

    where = Path(bundle)
    spec = runtimes if isinstance(runtimes, str) else ",".join(runtimes)
    with holding(where.parent, "conformance") if save else contextlib.nullcontext():
        report = check_conformance(where, spec, server=server, save=save)
    if progress:
        _console(progress).print(str(report), markup=False)
    return report


def bench(
    bundle: PathLike,
    *,
    batch_sizes: Sequence[int] = bench_defaults.BATCH_SIZES,
    threads: Sequence[int | Literal["all"]] = bench_defaults.THREADS,
    iterations: int = bench_defaults.ITERATIONS,
    budget_s: float = bench_defaults.BUDGET_S,
    compile: bool = bench_defaults.COMPILE,
    save: bool = False,
    progress: bool = False,
) -> BenchResult:
    """Time the bundle's model in PyTorch (eager, torch.compile, model.pt2) and each ONNX artifact in ONNX Runtime
    (and OpenVINO) at each batch size and thread count; ``budget_s`` is per contender and cell. Needs the run
    directory around the bundle. Writes nothing unless ``save``: then ``RUN_DIR/bench.json`` and the plots, and
    the run's report is refreshed, as `torchport bench` does."""
    from torchport.bench.bundle import bench_bundle, show_bench

    where = Path(bundle)
    console = _console(progress)
    result = bench_bundle(
        where,
        batches=list(batch_sizes),
        threads=list(threads),
        iterations=iterations,
        budget_s=budget_s,
        compile=compile,
        console=console if progress else None,
    )
    if progress:
        show_bench(result, console)
    if save:
        _save_bench(result, where.parent, console)
    return result


def _save_bench(result: BenchResult, run_dir: Path, console: Console) -> None:
    from torchport.bench.bundle import write_outputs
    from torchport.report.html import refresh_report

    with holding(run_dir, "bench"):
        written = write_outputs(result, run_dir)
        report = refresh_report(run_dir)
    console.print("wrote " + ", ".join(str(path) for path in [*written, *([report] if report else [])]))


# --- serve ---------------------------------------------------------------------------------------------------


@overload
def serve(
    bundles: PathLike | Sequence[PathLike],
    *,
    host: str | None = ...,
    port: int | None = ...,
    settings: ServeSettings = ...,
    background: Literal[False] = ...,
    progress: bool = ...,
) -> None: ...


@overload
def serve(
    bundles: PathLike | Sequence[PathLike],
    *,
    host: str | None = ...,
    port: int | None = ...,
    settings: ServeSettings = ...,
    background: Literal[True],
    progress: bool = ...,
) -> RunningServer: ...


def serve(
    bundles: PathLike | Sequence[PathLike],
    *,
    host: str | None = None,
    port: int | None = None,
    settings: ServeSettings = SERVE_DEFAULTS,
    background: bool = False,
    progress: bool = False,
) -> RunningServer | None:
    """Serve bundles over the Open Inference Protocol v2, as `torchport serve` does: ``settings`` holds every
    option (`torchport serve`'s defaults unless given), ``host`` and ``port`` override its own. Blocks until
    interrupted; with ``background=True``, returns a ready server in its own process (``server.url``), to use as a
    context manager that stops it when the block ends (``port=0``: a free port). Logs go to stderr only with
    ``progress``."""
    paths = [Path(bundles)] if isinstance(bundles, str | os.PathLike) else [Path(b) for b in bundles]
    chosen = replace(
        settings, host=settings.host if host is None else host, port=settings.port if port is None else port
    )
    if not progress:
        chosen = replace(chosen, log_level="warning", access_log=False)
    if background:
        from torchport.serving import start_server

        return start_server(paths, chosen, echo=progress)
    from torchport.serve import serve as serve_blocking

    serve_blocking(paths, chosen)
    return None


# --- the whole pipeline --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """What `run` did: the run directory, and whether every check (parity, strict variants) passed."""

    run_dir: Path
    passed: bool

    @property
    def bundle(self) -> Path:
        return self.run_dir / "bundle"

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"

    def __fspath__(self) -> str:
        return str(self.run_dir)


def run(
    config: Config | PathLike | None = None,
    run_dir: PathLike | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> RunResult:
    """train -> export -> verify -> optimize -> bench -> report, as `torchport run` does; with no ``config``, the
    bundled digits CNN. A failed check is ``passed == False``; the run directory holds everything either way."""
    from torchport.examples import example_path
    from torchport.pipeline import run_pipeline
    from torchport.runlock import run_dir_lock

    checked = _checked(config if config is not None else example_path("digits"))
    where = Path(run_dir) if run_dir is not None else default_run_dir(checked)
    with run_dir_lock(where, "run"):
        passed = run_pipeline(checked, where, _console(progress), overwrite=overwrite)
    return RunResult(where, passed)
