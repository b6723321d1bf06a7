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
from typing import NoReturn

from torchport.errors import TorchportError, UsageError, first_line

DEFAULT_CONFIG = "digits"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line style, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # logs and CI: wide enough that tables are not cut into slivers
        console = Console(highlight=False, width=160)
    return console


def _config_args(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    parser.add_argument(
        "config",
        nargs="?" if optional else None,
        help="YAML config file" + (" (default: the digits CNN)" if optional else ""),
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value", help="override config values, e.g. train.epochs=2"
    )


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from torchport.config import load_config
    from torchport.examples import example_path

    config_path = args.config or example_path(DEFAULT_CONFIG)
    if "=" in str(config_path) and not Path(config_path).exists():
        raise UsageError(f"'{config_path}' looks like an override; give the config file first")
    return load_config(config_path, args.overrides)


# --- verbs ---------------------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args)  # config errors first: they need no torch import
    from torchport.pipeline import dry_build

    shape = dry_build(config)
    _console().print(f"[green]ok[/] {args.config}: config '{config.name}' is valid; model {shape}")
    return 0


LAUNCH_OPTIONS = ("nnodes", "node_rank", "rdzv_endpoint", "rdzv_id", "max_restarts", "local_addr")


def cmd_train(args: argparse.Namespace) -> int:
    from torchport.train.launch import env_rank

    config = _load(args)
    if args.nproc_per_node is not None:
        return _launch_torchrun(args, config)  # before importing torch: this process is replaced by torchrun
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
    from torchport.train.launch import ClusterJob, render

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
    for name in BLOCKS.names():
        factory = BLOCKS.resolve(name)
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


def int_list(text: str) -> list[int]:
    """`1,64` -> [1, 64] for --batch-sizes and --threads."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,64, got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,64, got '{text}'")
    return values


def threads_list(text: str) -> list[int | str]:
    """`1,all` -> [1, "all"] for bench --threads: "all" is every CPU this process may use."""
    values: list[int | str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "all":
            values.append(part)
        elif part.isdigit() and int(part) >= 1:
            values.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"expected positive integers or 'all' like 1,all, got '{text}'")
    if not values:
        raise argparse.ArgumentTypeError(f"expected positive integers or 'all' like 1,all, got '{text}'")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    from torchport.bench import bench_stage

    with _holding(Path(args.bundle).parent, "bench"):
        bench_stage(
            Path(args.bundle),
            console=_console(),
            batches=args.batch_sizes,
            threads=args.threads,
            iterations=args.iterations,
            budget_s=args.budget,
            compile=not args.no_compile,
            json_path=Path(args.json) if args.json else None,
        )
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


# --- parser --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="torchport", description="From a YAML config to a verified, deployable model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    def verb(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    _config_args(verb("validate", cmd_validate, "check a config (and build its model) without training"))
    train = verb("train", cmd_train, "train a model from a config into a run directory")
    _config_args(train)
    train.add_argument("--run-dir", help="where to write (default: runs/<config name>)")
    train.add_argument("--resume", action="store_true", help="continue from the run's last good checkpoint")
    train.add_argument(
        "--overwrite", action="store_true", help="start over in a run dir that holds checkpoints (deletes them)"
    )
    torchrun = train.add_argument_group("distributed (passed to torchrun; see README, Distributed training)")
    torchrun.add_argument("--nproc-per-node", type=int, help="start N DDP processes on this node with torchrun")
    torchrun.add_argument("--nnodes", help="number of nodes N, or MIN:MAX for an elastic job (default 1)")
    torchrun.add_argument("--node-rank", type=int, help="fixed rank of this node (static rendezvous); omit for c10d")
    torchrun.add_argument("--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous, the same on every node")
    torchrun.add_argument("--rdzv-id", help="job id shared by every node (default: the config name)")
    torchrun.add_argument("--max-restarts", type=int, help="restart the process group up to K times after a failure")
    torchrun.add_argument(
        "--local-addr", help="this node's address as the other nodes reach it (when its hostname resolves elsewhere)"
    )
    verb("blocks", cmd_blocks, "list the built-in blocks and their arguments")
    verb("export", cmd_export, "export a trained run to ONNX (+ AOTInductor) and write its bundle").add_argument(
        "run_dir", help="a run directory written by `torchport train`"
    )
    verb("verify", cmd_verify, "check every artifact of a bundle against PyTorch").add_argument(
        "bundle", help="a bundle directory (RUN_DIR/bundle)"
    )
    verb(
        "optimize",
        cmd_optimize,
        "add optimised variants (graph-optimised, INT8, FP16, .ort) to a bundle, each gated on accuracy",
    ).add_argument("bundle", help="a bundle directory inside its run directory (RUN_DIR/bundle)")
    conformance = verb(
        "conformance",
        cmd_conformance,
        "run the golden inputs in Python/ORT, OpenVINO, Node.js, a browser, C++, C, Java, Go and Rust against PyTorch",
    )
    conformance.add_argument("bundle", help="a bundle directory (RUN_DIR/bundle)")
    conformance.add_argument(
        "--runtimes",
        default="all",
        help="all (default) or a comma list of python, openvino, node, browser, cpp, c, java, go, rust; with --server "
        "also the v2 clients csharp, r, java-v2",
    )
    conformance.add_argument("--json", help="also write the results as JSON to this file")
    conformance.add_argument(
        "--server", help="also run the v2 clients (csharp, r, java-v2) against this torchport serve URL, or 'local'"
    )
    bench = verb("bench", cmd_bench, "measure PyTorch eager, torch.compile and each ONNX artifact side by side")
    bench.add_argument("bundle", help="a bundle directory inside its run directory (RUN_DIR/bundle)")
    bench.add_argument("--batch-sizes", type=int_list, default=[1, 8, 64], help="comma-separated (default 1,8,64)")
    bench.add_argument(
        "--threads", type=threads_list, default=[1, "all"], help="intra-op threads; 'all' = every CPU (default 1,all)"
    )
    bench.add_argument("--iterations", type=int, default=100, help="most timed calls per contender and cell")
    bench.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per contender and cell")
    bench.add_argument("--no-compile", action="store_true", help="leave torch.compile out (~10 s per batch size)")
    bench.add_argument("--json", help="also write the results here (RUN_DIR/bench.json is always written)")
    verb("inspect", cmd_inspect, "print a readable summary of a bundle").add_argument("bundle")
    verb("schema", cmd_schema, "print the JSON Schema of a published format").add_argument("name", choices=["manifest"])
    launch = verb("launch", cmd_launch, "write a cluster job (SLURM sbatch script or Kubeflow PyTorchJob) for a config")
    _config_args(launch)
    launch.add_argument("--emit", required=True, choices=["slurm", "kubernetes"], help="what to write")
    launch.add_argument("--nodes", type=int, default=1, help="number of machines (default 1)")
    launch.add_argument(
        "--gpus-per-node", type=int, default=0, help="GPUs (= processes) per machine; 0: one CPU process"
    )
    launch.add_argument("--min-nodes", type=int, help="elastic: run with as few as this many nodes (default --nodes)")
    launch.add_argument("--max-restarts", type=int, default=3, help="torchrun restarts after a failure (default 3)")
    launch.add_argument("--image", default="torchport:latest", help="kubernetes: container image with torchport")
    launch.add_argument("--run-dir", help="run directory as the nodes see it")
    launch.add_argument("--output", "-o", help="write here instead of stdout")
    run = verb("run", cmd_run, "train, export, verify and bundle in one go (default: the digits CNN)")
    _config_args(run, optional=True)
    run.add_argument("--run-dir", help="where to write (default: runs/<config name>)")
    run.add_argument("--overwrite", action="store_true", help="start over in a run dir that holds checkpoints")
    from torchport.serve.__main__ import add_arguments  # argparse only; the server imports happen in run()

    add_arguments(verb("serve", cmd_serve, "serve bundles over the Open Inference Protocol v2 (KServe/Triton REST)"))
    return parser


def _tell_the_agent() -> None:
    """Under torchport's torchrun agent: leave the mark that says this worker has printed its one line, so the
    agent, failing on the same event (a cut link), does not print a second one."""
    mark = os.environ.get("TORCHPORT_WORKER_SAID")
    if mark:
        with contextlib.suppress(OSError):
            Path(mark).touch()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides after an option (`cfg.yaml --resume a=1`) arrive as extras; anything else is a usage error.
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.handler(args))
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
