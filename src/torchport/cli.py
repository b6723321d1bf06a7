"""The ``torchport`` command: parse, call the stage function, print, map errors to exit codes.

Exit codes: 0 ok, 1 a check failed (parity, accuracy gate), 2 bad usage or config, 3 an internal error (a bug of
ours). A user sees one line per error; the traceback only with ``--debug``. Heavy imports happen inside the
verbs so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from torchport.cli_parser import build_parser
from torchport.errors import TorchportError, UsageError, first_line

DEFAULT_CONFIG = "digits"


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

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


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args)  # config errors first: they need no torch import
    from torchport.pipeline import dry_build

    shape = dry_build(config)
    _console().print(f"[green]ok[/] {args.config}: config '{config.name}' is valid; model {shape}")
    return 0


LAUNCH_OPTIONS = ("nnodes", "node_rank", "rdzv_endpoint", "rdzv_id", "max_restarts", "local_addr")


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc_per_node is not None:  # before importing torch: this process is replaced by torchrun
        return _launch_torchrun(args, _load(args, check=False))
    from torchport.train.launch import env_rank

    config = _load(args)
    from torchport.train.loop import train

    given = [f"--{name.replace('_', '-')}" for name in LAUNCH_OPTIONS if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{given[0]} is a torchrun option; it needs --nproc-per-node N")
    run_dir = Path(args.run_dir) if args.run_dir else None
    summary = train(config, run_dir, resume=args.resume, console=_console(), overwrite=args.overwrite)
    if env_rank() != 0:  # under torchrun, rank 0 speaks for the job
        return 0
    best = summary["best"].get(summary["metric"])
    best_text = f"{summary['metric']} {best:.4f}" if best is not None else ""
    world = f", world size {summary['world_size']}" if summary["world_size"] > 1 else ""
    _console().print(
        f"[green]trained[/] {config.name}: best {best_text} at epoch {summary['best'].get('epoch', 0) + 1}, "
        f"{summary['samples_per_second']} samples/s, {summary['train_seconds']:.1f} s{world}"
    )
    return 0


def _launch_torchrun(args: argparse.Namespace, config) -> int:  # type: ignore[no-untyped-def]
    """Hand the process over to torchrun (exec, not a child: signals and the exit code are torchrun's own)."""
    import os
    import shlex

    from torchport.config import default_run_dir
    from torchport.train.launch import TorchrunOptions, agent_env, torchrun_command, under_torchrun, worker_args
    from torchport.validate import check_data_files

    if under_torchrun():
        raise UsageError("--nproc-per-node: this process already runs under torchrun; drop the option")
    if config.train.strategy in ("dp", "single"):
        raise UsageError(
            f"train.strategy: '{config.train.strategy}' is one process; use ddp or auto with --nproc-per-node"
        )
    options = TorchrunOptions(
        nproc_per_node=args.nproc_per_node,
        nnodes=args.nnodes or "1",
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id or config.name,
        max_restarts=args.max_restarts or 0,
        local_addr=args.local_addr,
        dist_timeout_s=config.train.dist_timeout_s,
    )
    check_data_files(config.data)  # what needs no torch is refused here, once, not by every worker
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    _check_run_dir_free(run_dir, args.resume, args.overwrite)  # rank 0 takes the lock; refuse early here
    workers = worker_args(Path(args.config), run_dir, args.overrides, args.resume, args.debug)
    if args.overwrite:
        workers.insert(workers.index("train") + 1, "--overwrite")
    command = torchrun_command(options, workers)
    env = agent_env(args.local_addr, args.debug)  # OMP_NUM_THREADS, GLOO_SOCKET_IFNAME, log levels
    print(f"torchrun: {shlex.join(command)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.environ.update(env)
    os.execv(command[0], command)
    return 0  # not reached


def _check_run_dir_free(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """What rank 0's train() would refuse, refused before torchrun starts: one line and exit 2, not a failed job."""
    from torchport.runlock import check_free, has_checkpoints

    check_free(run_dir)
    if not resume and not overwrite and has_checkpoints(run_dir):
        raise UsageError(
            f"{run_dir} holds the checkpoints of an earlier run; continue it with --resume, or start over with"
            " --overwrite (deletes them)"
        )


def _holding(run_dir: Path, verb: str):  # type: ignore[no-untyped-def]
    """The run directory's lock for a verb that writes there (see runlock.py); nothing outside a run dir."""
    import contextlib

    from torchport.runlock import run_dir_lock

    return run_dir_lock(run_dir, verb) if (run_dir / "config.yaml").is_file() else contextlib.nullcontext()


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
        _console().print(f"wrote {args.output} ({args.emit}, {job.nnodes} node(s) x {job.procs_per_node} process(es))")
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
    _console().print(table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from torchport.pipeline import export_stage

    with _holding(Path(args.run_dir), "export"):
        export_stage(Path(args.run_dir), console=_console())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from torchport.pipeline import verify_stage

    with _holding(Path(args.bundle).parent, "verify"):  # it writes its results into the manifest
        return 0 if verify_stage(Path(args.bundle), console=_console()) else 1


def cmd_optimize(args: argparse.Namespace) -> int:
    from torchport.pipeline import optimize_stage

    with _holding(Path(args.bundle).parent, "optimize"):
        return 0 if optimize_stage(Path(args.bundle), console=_console()) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from torchport.serve.__main__ import run

    return run(args)


def cmd_conformance(args: argparse.Namespace) -> int:
    from torchport.runtimes.conformance import conformance_command

    return conformance_command(Path(args.bundle), args.runtimes, Path(args.json) if args.json else None, args.server)


def cmd_inspect(args: argparse.Namespace) -> int:
    from torchport.bundle.inspect import print_bundle

    print_bundle(Path(args.bundle), _console())
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from torchport.bundle.manifest import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from torchport.bench.bundle import bench_stage
    from torchport.report.html import refresh_report

    run_dir, console = Path(args.bundle).parent, _console()
    with _holding(run_dir, "bench"):
        bench_stage(
            Path(args.bundle),
            console=console,
            batches=args.batch_sizes,
            threads=args.threads,
            iterations=args.iterations,
            budget_s=args.budget,
            compile=not args.no_compile,
            json_path=Path(args.json) if args.json else None,
        )
        report = refresh_report(run_dir)  # a run's report shows its newest benchmark
        if report is not None:
            console.print(f"wrote {report}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from torchport.config import default_run_dir
    from torchport.pipeline import run_pipeline
    from torchport.runlock import run_dir_lock

    config = _load(args)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(config)
    with run_dir_lock(run_dir, "run"):  # across every stage; train() inside takes it again
        ok = run_pipeline(config, run_dir, console=_console(), overwrite=args.overwrite)
    return 0 if ok else 1


def _tell_the_agent() -> None:
    """Under torchport's torchrun agent: leave the mark that says this worker has printed its one line, so the
    agent, failing on the same event (a cut link), does not print a second one."""
    mark = os.environ.get("TORCHPORT_WORKER_SAID")
    if mark:
        with contextlib.suppress(OSError):
            Path(mark).touch()


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
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
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides after an option (`cfg.yaml --resume a=1`) arrive as extras; anything else is a usage error.
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(VERBS[args.verb](args))
    except TorchportError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _tell_the_agent()
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 3  # not 1: that says a check failed


if __name__ == "__main__":
    raise SystemExit(main())
