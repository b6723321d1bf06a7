"""The ``torchport`` command: parse, call the stage function, print, map errors to exit codes.

Exit codes: 0 ok, 1 a check failed (parity, accuracy gate), 2 bad usage or config, 3 an internal error (a bug of
ours). A user sees one line per error; the traceback too with ``--debug``, which never changes the exit code.
With ``--json`` a verb's result is one JSON document on stdout (``torchport.cli_json``) and what it says for
people goes to stderr. Heavy imports happen inside the verbs so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from torchport.cli_exit import arrow_allocates_with_malloc, exit_now, exit_status
from torchport.cli_json import Document, emit, error_document, stdout_to_stderr
from torchport.cli_parser import EXIT_INTERNAL, EXIT_USAGE, UsageExit, parse, upgrade_json_file
from torchport.cli_torchrun import LAUNCH_OPTIONS, hand_over_to_torchrun
from torchport.errors import TorchportError, UsageError, first_line
from torchport.runlock import holding

DEFAULT_CONFIG = "digits"


@dataclass(frozen=True)
class Outcome:
    """What a verb with --json returns: its exit code and its result as a document (printed only with --json)."""

    code: int
    document: Document


def _console(args: argparse.Namespace, chatty: bool = True):  # type: ignore[no-untyped-def]
    """The console a verb speaks to people on: stdout, or with --json stderr (``chatty``: a long stage's progress
    and verdict) or nowhere (a quick verb's summary, which the document says already)."""
    from rich.console import Console

    if args.json:
        return Console(highlight=False, stderr=True, quiet=not chatty)
    console = Console(highlight=False)
    if not console.is_terminal:  # logs and CI: wide enough that tables are not cut into slivers
        console = Console(highlight=False, width=160)
    return console


def _load(args: argparse.Namespace, check: bool = True):  # type: ignore[no-untyped-def]
    """The verb's config, loaded and (unless ``check`` is false) checked against the code behind its names.

    Loading imports no torch, so a config error is reported at once; ``check=False`` is for the launcher that
    hands over to torchrun, whose workers run the checks that need torch themselves.
    """
    from torchport.config import load_config
    from torchport.examples import example_path
    from torchport.validate import check_config

    config_path = args.config or example_path(DEFAULT_CONFIG)
    if "=" in str(config_path) and not Path(config_path).exists():
        raise UsageError(f"'{config_path}' looks like an override; give the config file first")
    config = load_config(config_path, args.overrides)
    return check_config(config) if check else config


# --- verbs ---------------------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> Outcome:
    config = _load(args)  # config errors first: they need no torch import
    from torchport.cli_json import validate_document
    from torchport.pipeline import dry_build

    shape = dry_build(config)
    _console(args, chatty=False).print(f"[green]ok[/] {args.config}: config '{config.name}' is valid; model {shape}")
    return Outcome(0, validate_document(Path(args.config), config, shape))


def cmd_train(args: argparse.Namespace) -> int | Outcome:
    if _hands_over(args):  # before importing torch: this process is replaced by torchrun
        return hand_over_to_torchrun(args, _load(args, check=False))
    from torchport.config import default_run_dir
    from torchport.train.launch import env_rank

    config = _load(args)
    from torchport.cli_json import train_document
    from torchport.train.loop import train

    given = [f"--{name.replace('_', '-')}" for name in LAUNCH_OPTIONS if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{given[0]} is a torchrun option; it needs --nproc-per-node N")
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    train(config, run_dir, resume=args.resume, console=_console(args), overwrite=args.overwrite)
    if env_rank() != 0:  # under torchrun, rank 0 speaks for the job
        return 0
    document = train_document(run_dir)  # from summary.json, as rank 0 wrote it
    best = f"{document['metric']} {document['best']:.4f}" if document["best"] is not None else ""
    world = f", world size {document['world_size']}" if document["world_size"] > 1 else ""
    _console(args).print(
        f"[green]trained[/] {config.name}: best {best} at epoch {document['best_epoch']}, "
        f"{document['samples_per_second']} samples/s, {document['train_seconds']:.1f} s{world}"
    )
    return Outcome(0, document)


def _hands_over(args: argparse.Namespace) -> bool:
    """Whether this `train` becomes torchrun: its workers print the document, through the stdout it leaves them."""
    return args.verb == "train" and args.nproc_per_node is not None


def cmd_launch(args: argparse.Namespace) -> int:
    from torchport.config import default_run_dir
    from torchport.train.manifests import ClusterJob, render

    config = _load(args)
    job = ClusterJob(
        name=config.name,
        config=Path(args.config).resolve(),
        config_text=Path(args.config).read_text(),
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        run_dir=args.run_dir
        or (f"/workspace/runs/{config.name}" if args.emit == "kubernetes" else str(default_run_dir(config).resolve())),
        overrides=tuple(args.overrides),
        max_restarts=args.max_restarts,
        min_nodes=args.min_nodes,
        image=args.image,
    )
    text = render(job, args.emit)
    if args.output:
        Path(args.output).write_text(text)
        _console(args).print(
            f"wrote {args.output} ({args.emit}, {job.nnodes} node(s) x {job.procs_per_node} process(es))"
        )
    else:
        sys.stdout.write(text)
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    from rich.table import Table

    from torchport.models.compose import block_arguments
    from torchport.registry import BLOCKS

    table = Table(title="torchport blocks (input sizes are inferred; `classes` = number of outputs)")
    for column in ("block", "arguments", "what it does"):
        table.add_column(column)
    for name in sorted(BLOCKS.names()):
        factory = BLOCKS.get(name)
        arguments = ", ".join(f"{n}={d}" if d != "required" else n for n, _, d in block_arguments(factory))
        doc = (factory.__doc__ or "").strip().splitlines()
        table.add_row(name, arguments or "-", doc[0] if doc else "")
    table.add_row("residual", "[..layers..]", "x + layers(x); the layers must keep the shape.")
    _console(args).print(table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from torchport.pipeline import export_stage

    with holding(Path(args.run_dir), "export"):
        export_stage(Path(args.run_dir), console=_console(args))
    return 0


def cmd_verify(args: argparse.Namespace) -> Outcome:
    from torchport.cli_json import verify_document
    from torchport.pipeline import verify_stage

    bundle = Path(args.bundle)
    with holding(bundle.parent, "verify"):  # it writes its results into the manifest
        passed = verify_stage(bundle, console=_console(args))
        return Outcome(0 if passed else 1, verify_document(bundle, passed))


def cmd_optimize(args: argparse.Namespace) -> Outcome:
    from torchport.cli_json import optimize_document
    from torchport.config import load_config
    from torchport.pipeline import optimize_stage

    bundle = Path(args.bundle)
    with holding(bundle.parent, "optimize"):
        passed = optimize_stage(bundle, console=_console(args))
        requested = bool(load_config(bundle.parent / "config.yaml").export.variants)  # there: optimize needs it
        return Outcome(0 if passed else 1, optimize_document(bundle, passed, requested))


def cmd_serve(args: argparse.Namespace) -> int:
    from torchport.serve.__main__ import run

    return run(args)


def cmd_conformance(args: argparse.Namespace) -> Outcome:
    from torchport.cli_json import conformance_document
    from torchport.runtimes.conformance import conformance_command

    bundle, json_out = Path(args.bundle), Path(args.json_out) if args.json_out else None
    with holding(bundle.parent, "conformance"):  # it records its results in the manifest
        code = conformance_command(bundle, args.runtimes, json_out, args.server)  # prints with print(): see main
    return Outcome(code, conformance_document(bundle, passed=code == 0))


def cmd_inspect(args: argparse.Namespace) -> Outcome:
    from torchport.bundle.inspect import print_bundle
    from torchport.cli_json import inspect_document

    print_bundle(Path(args.bundle), _console(args, chatty=False))  # checks the checksums and the graph too
    return Outcome(0, inspect_document(Path(args.bundle)))


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from torchport.bundle.manifest import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> Outcome:
    from torchport.bench.bundle import bench_stage
    from torchport.cli_json import bench_document
    from torchport.report.html import refresh_report

    run_dir, console = Path(args.bundle).parent, _console(args)
    with holding(run_dir, "bench"):
        bench_stage(
            Path(args.bundle),
            console=console,
            batches=args.batch_sizes,
            threads=args.threads,
            iterations=args.iterations,
            budget_s=args.budget,
            compile=not args.no_compile,
            json_path=Path(args.json_out) if args.json_out else None,
        )
        report = refresh_report(run_dir)  # a run's report shows its newest benchmark
        if report is not None:
            console.print(f"wrote {report}")
        return Outcome(0, bench_document(Path(args.bundle), report))


def cmd_run(args: argparse.Namespace) -> int:
    from torchport.config import default_run_dir
    from torchport.pipeline import run_pipeline
    from torchport.runlock import run_dir_lock

    config = _load(args)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    with run_dir_lock(run_dir, "run"):  # across every stage; train() inside takes it again
        ok = run_pipeline(config, run_dir, console=_console(args), overwrite=args.overwrite)
    return 0 if ok else 1


def _tell_the_agent() -> None:
    """Under torchport's torchrun agent: leave the mark that says this worker has printed its one line, so the
    agent, failing on the same event (a cut link), does not print a second one."""
    mark = os.environ.get("TORCHPORT_WORKER_SAID")
    if mark:
        with contextlib.suppress(OSError):
            Path(mark).touch()


# A verb with --json (``json_output=True`` in cli_parser) returns an Outcome; the others their exit code.
def cmd_package(args: argparse.Namespace) -> int:
    from torchport.package import package_bundle

    out = package_bundle(
        Path(args.bundle),
        args.to,
        Path(args.out),
        force=args.force,
        variant=args.variant,
        variant_as_version=args.variant_as_version,
        max_batch_size=args.max_batch_size,
        storage_uri=args.storage_uri,
        image=args.image,
    )
    _console(args).print(f"packaged {args.bundle} for {args.to} in {out}; {out / 'README.md'} says how to deploy it")
    return 0


VERBS: dict[str, Callable[[argparse.Namespace], int | Outcome]] = {
    "validate": cmd_validate,
    "train": cmd_train,
    "blocks": cmd_blocks,
    "export": cmd_export,
    "verify": cmd_verify,
    "optimize": cmd_optimize,
    "conformance": cmd_conformance,
    "bench": cmd_bench,
    "inspect": cmd_inspect,
    "schema": cmd_schema,
    "launch": cmd_launch,
    "run": cmd_run,
    "serve": cmd_serve,
    "package": cmd_package,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command line; the exit code (a usage error raises SystemExit(2) after its line, as argparse does)."""
    argv = upgrade_json_file(sys.argv[1:] if argv is None else list(argv))
    try:
        args = parse(argv)
    except UsageExit as refused:
        if "--json" in argv:
            emit(error_document(refused.message, EXIT_USAGE))
        raise
    # With --json, stdout is the document's alone; a train that becomes torchrun leaves it to the workers.
    redirect = stdout_to_stderr() if args.json and not _hands_over(args) else contextlib.nullcontext()
    code, document = _run(args, redirect)
    if args.json and document is not None and _speaks_for_the_job():
        emit(document)
    return code


def _run(args: argparse.Namespace, redirect: contextlib.AbstractContextManager[None]) -> tuple[int, Document | None]:
    """Run the verb; map what it raised to an exit code and the document that says what went wrong."""
    try:
        with redirect:
            outcome = VERBS[args.verb](args)
    except TorchportError as exc:
        _print_error(args, f"error: {exc}")
        _tell_the_agent()
        return exc.exit_code, error_document(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130, error_document("interrupted", 130)
    except Exception as exc:
        line = f"internal error: {type(exc).__name__}: {first_line(exc)}"
        _print_error(args, line if args.debug else f"{line} (rerun with --debug for the traceback)")
        return EXIT_INTERNAL, error_document(line, EXIT_INTERNAL)  # not 1: that says a check failed
    if isinstance(outcome, Outcome):
        return outcome.code, outcome.document
    return outcome, None


def _print_error(args: argparse.Namespace, line: str) -> None:
    """The one line on stderr; with --debug the traceback above it (the exit code stays what it would be)."""
    if args.debug:
        import traceback

        traceback.print_exc()
    print(line, file=sys.stderr, flush=True)


def _speaks_for_the_job() -> bool:
    """Under torchrun every rank runs this CLI; rank 0 alone prints a document, so stdout holds one."""
    from torchport.train.launch import env_rank

    return env_rank() == 0


def entry() -> NoReturn:
    """The ``torchport`` command: ``main``, then an exit that skips C's (``cli_exit.py`` says why)."""
    arrow_allocates_with_malloc()  # here, not in main(): an in-process caller's environment is its own
    try:
        code = main()
    except SystemExit as stop:
        code = exit_status(stop)
    exit_now(code)


if __name__ == "__main__":
    entry()
