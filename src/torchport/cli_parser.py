"""What the ``torchport`` command line accepts: every verb with its arguments, and nothing that runs them.

Kept apart from ``torchport.cli`` (what each verb does) so the argument table reads in one place. Only argparse,
the registries' names and the server's option list are imported here: ``torchport --help`` imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from torchport.registry import CLIENTS, RUNTIMES


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line style, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


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


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; ``args.verb`` names the verb that ``torchport.cli`` runs."""
    parser = _Parser(prog="torchport", description="From a YAML config to a verified, deployable model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    _config_args(_verb(verbs, "validate", "check a config (and build its model) without training"))
    _add_train(_verb(verbs, "train", "train a model from a config into a run directory"))
    _verb(verbs, "blocks", "list the built-in blocks and their arguments")
    _add_bundle_verbs(verbs)
    _add_bench(_verb(verbs, "bench", "measure PyTorch eager, torch.compile and each ONNX artifact side by side"))
    _verb(verbs, "inspect", "print a readable summary of a bundle").add_argument("bundle")
    _verb(verbs, "schema", "print the JSON Schema of a published format").add_argument("name", choices=["manifest"])
    _add_launch(_verb(verbs, "launch", "write a cluster job (SLURM sbatch script or Kubeflow PyTorchJob) for a config"))
    run = _verb(verbs, "run", "train, export, verify and bundle in one go (default: the digits CNN)")
    _config_args(run, optional=True)
    run.add_argument("--run-dir", help="where to write (default: runs/<config name>)")
    run.add_argument("--overwrite", action="store_true", help="start over in a run dir that holds checkpoints")
    from torchport.serve.__main__ import add_arguments  # argparse only; the server imports happen in run()

    add_arguments(_verb(verbs, "serve", "serve bundles over the Open Inference Protocol v2 (KServe/Triton REST)"))
    return parser


def _verb(verbs: argparse._SubParsersAction[_Parser], name: str, help_text: str) -> argparse.ArgumentParser:
    return verbs.add_parser(name, help=help_text, description=help_text)


def _config_args(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    parser.add_argument(
        "config",
        nargs="?" if optional else None,
        help="YAML config file" + (" (default: the digits CNN)" if optional else ""),
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value", help="override config values, e.g. train.epochs=2"
    )


def _add_train(train: argparse.ArgumentParser) -> None:
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


def _add_bundle_verbs(verbs: argparse._SubParsersAction[_Parser]) -> None:
    """export, verify, optimize and conformance: the verbs that make or check a bundle."""
    _verb(verbs, "export", "export a trained run to ONNX (+ AOTInductor) and write its bundle").add_argument(
        "run_dir", help="a run directory written by `torchport train`"
    )
    _verb(verbs, "verify", "check every artifact of a bundle against PyTorch").add_argument(
        "bundle", help="a bundle directory (RUN_DIR/bundle)"
    )
    _verb(
        verbs,
        "optimize",
        "add optimised variants (graph-optimised, INT8, FP16, .ort) to a bundle, each gated on accuracy",
    ).add_argument("bundle", help="a bundle directory inside its run directory (RUN_DIR/bundle)")
    conformance = _verb(
        verbs,
        "conformance",
        "run the golden inputs in Python/ORT, OpenVINO, Node.js, a browser, C++, C, Java, Go and Rust against PyTorch",
    )
    conformance.add_argument("bundle", help="a bundle directory (RUN_DIR/bundle)")
    clients = ", ".join(CLIENTS.names())
    conformance.add_argument(
        "--runtimes",
        default="all",
        help=f"all (default) or a comma list of {', '.join(RUNTIMES.names())}; with --server also the v2 clients "
        f"{clients}",
    )
    conformance.add_argument("--json", help="also write the results as JSON to this file")
    conformance.add_argument(
        "--server", help=f"also run the v2 clients ({clients}) against this torchport serve URL, or 'local'"
    )


def _add_bench(bench: argparse.ArgumentParser) -> None:
    from torchport.bench import defaults

    sizes = ",".join(str(size) for size in defaults.BATCH_SIZES)
    threads = ",".join(str(count) for count in defaults.THREADS)
    bench.add_argument("bundle", help="a bundle directory inside its run directory (RUN_DIR/bundle)")
    bench.add_argument(
        "--batch-sizes", type=int_list, default=list(defaults.BATCH_SIZES), help=f"comma-separated (default {sizes})"
    )
    bench.add_argument(
        "--threads",
        type=threads_list,
        default=list(defaults.THREADS),
        help=f"intra-op threads; 'all' = every CPU (default {threads})",
    )
    bench.add_argument(
        "--iterations", type=int, default=defaults.ITERATIONS, help="most timed calls per contender and cell"
    )
    bench.add_argument(
        "--budget", type=float, default=defaults.BUDGET_S, help="seconds of timed calls per contender and cell"
    )
    bench.add_argument("--no-compile", action="store_true", help="leave torch.compile out (~10 s per batch size)")
    bench.add_argument("--json", help="also write the results here (RUN_DIR/bench.json is always written)")


def _add_launch(launch: argparse.ArgumentParser) -> None:
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
