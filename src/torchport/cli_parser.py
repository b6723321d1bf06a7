"""What the ``torchport`` command line accepts: every verb with its arguments, and nothing that runs them.

Kept apart from ``torchport.cli`` (what each verb does) so the argument table reads in one place. Only argparse,
the registries' names and the server's option list are imported here: ``torchport --help`` imports no torch.

The conventions every verb shares live here too: ``--debug`` before or after the verb, ``--json`` on the verbs
that have a result worth parsing (``_verb(..., json_output=True)``), and the exit codes in every ``--help``.
A new verb is one ``_verb`` call here and one entry in ``torchport.cli.VERBS``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from torchport.registry import CLIENTS, RUNTIMES

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

JSON_HELP = "print one JSON document on stdout, also on failure (see README, Machine-readable output)"

# bench and conformance took `--json FILE` before --json meant stdout; that file is now --json-out's
JSON_FILE_VERBS = ("bench", "conformance")


def exit_codes(check_failed: str | None = None) -> str:
    """The exit-code table that ends a --help; ``check_failed`` says what exit 1 means for a verb that checks."""
    lines = ["exit codes:", f"  {EXIT_OK}  ok"]
    if check_failed:
        lines.append(f"  {EXIT_CHECK_FAILED}  {check_failed}")
    lines += [
        f"  {EXIT_USAGE}  bad usage, config or input: one line on stderr names the key, file or tensor at fault",
        f"  {EXIT_INTERNAL}  internal error, a bug of torchport's: one line on stderr; --debug adds the traceback",
    ]
    return "\n".join(lines)


TOP_EPILOG = (
    exit_codes("a check failed: parity (verify, run), a strict variant gate (optimize), a runtime (conformance)")
    + "\n\n--debug may come before or after the verb. --json (validate, train, verify, inspect, conformance, bench,"
    '\noptimize) prints one JSON document on stdout; on exit 2 or 3 it is {"error": ..., "exit_code": ...}.'
)


class UsageExit(SystemExit):
    """A command line argparse refused: exit code 2, with the message (already printed) kept for --json."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line style, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise UsageExit(message)


class _Version(argparse.Action):
    """``--version``: the installed package's version (``torchport.__version__``), looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **options: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **options)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        import torchport

        print(f"torchport {torchport.__version__}")
        parser.exit()


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
    parser = _Parser(
        prog="torchport",
        description="From a YAML config to a verified, deployable model.",
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print torchport's version and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also after the verb)")
    parser.set_defaults(json=False)  # the verbs without --json read as "not asked"
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    _config_args(_verb(verbs, "validate", "check a config (and build its model) without training", json_output=True))
    _add_train(_verb(verbs, "train", "train a model from a config into a run directory", json_output=True))
    _verb(verbs, "blocks", "list the built-in blocks and their arguments")
    _add_bundle_verbs(verbs)
    _add_bench(
        _verb(
            verbs,
            "bench",
            "measure PyTorch eager, torch.compile and each ONNX artifact side by side",
            json_output=True,
        )
    )
    _verb(verbs, "inspect", "print a readable summary of a bundle", json_output=True).add_argument("bundle")
    _verb(verbs, "schema", "print the JSON Schema of a published format").add_argument("name", choices=["manifest"])
    _add_launch(_verb(verbs, "launch", "write a cluster job (SLURM sbatch script or Kubeflow PyTorchJob) for a config"))
    run = _verb(
        verbs,
        "run",
        "train, export, verify and bundle in one go (default: the digits CNN)",
        check_failed="an artifact failed verification, or a variant its gate under export.strict_variants",
    )
    _config_args(run, optional=True)
    run.add_argument("--run-dir", help="where to write (default: runs/<config name>)")
    run.add_argument("--overwrite", action="store_true", help="start over in a run dir that holds checkpoints")
    from torchport.serve.__main__ import add_arguments  # argparse only; the server imports happen in run()

    add_arguments(_verb(verbs, "serve", "serve bundles over the Open Inference Protocol v2 (KServe/Triton REST)"))
    _add_package(_verb(verbs, "package", "hand a bundle to Triton, KServe, MLflow or ONNX test data"))
    return parser


def _verb(
    verbs: argparse._SubParsersAction[_Parser],
    name: str,
    help_text: str,
    check_failed: str | None = None,
    json_output: bool = False,
) -> argparse.ArgumentParser:
    """A verb's parser with what every verb shares: --debug, the exit codes in its --help and, when it has a
    result worth parsing (``json_output``), --json."""
    parser = verbs.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=exit_codes(check_failed),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # SUPPRESS: left out, it does not reset a --debug given before the verb
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help=JSON_HELP)
    return parser


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
    _verb(
        verbs,
        "verify",
        "check every artifact of a bundle against PyTorch",
        check_failed="an artifact failed its parity (or accuracy) check",
        json_output=True,
    ).add_argument("bundle", help="a bundle directory (RUN_DIR/bundle)")
    _verb(
        verbs,
        "optimize",
        "add optimised variants (graph-optimised, INT8, FP16, .ort) to a bundle, each gated on accuracy",
        check_failed="a variant was left out and export.strict_variants is true",
        json_output=True,
    ).add_argument("bundle", help="a bundle directory inside its run directory (RUN_DIR/bundle)")
    conformance = _verb(
        verbs,
        "conformance",
        "run the golden inputs in Python/ORT, OpenVINO, Node.js, a browser, C++, C, Java, Go and Rust against PyTorch",
        check_failed="a runtime failed or errored (a skipped one does not count)",
        json_output=True,
    )
    conformance.add_argument("bundle", help="a bundle directory (RUN_DIR/bundle)")
    clients = ", ".join(CLIENTS.names())
    conformance.add_argument(
        "--runtimes",
        default="all",
        help=f"all (default) or a comma list of {', '.join(RUNTIMES.names())}; with --server also the v2 clients "
        f"{clients}",
    )
    conformance.add_argument(
        "--json-out", metavar="FILE", help="also write the list of per-runtime results to this file (was --json FILE)"
    )
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
    bench.add_argument(
        "--json-out",
        metavar="FILE",
        help="also write bench.json's results here (was --json FILE; bench.json is always written)",
    )


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


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as a namespace; a usage error prints its line and raises `UsageExit` (exit code 2)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides after an option (`cfg.yaml --resume a=1`) arrive as extras; anything else is a usage error.
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def upgrade_json_file(argv: list[str]) -> list[str]:
    """``bench B --json out.json`` -> ``bench B --json-out out.json``: bench and conformance took a file after
    --json before it meant "the document on stdout", and scripts written then keep working. A value counts as that
    file when it ends in .json (and is no folder), or follows ``--json=``; a note on stderr says the new spelling."""
    verb = next((item for item in argv if not item.startswith("-")), None)
    if verb not in JSON_FILE_VERBS:
        return argv
    upgraded: list[str] = []
    items = iter(argv)
    for item in items:
        if item.startswith("--json="):
            upgraded += ["--json-out", item.removeprefix("--json=")]
        elif item == "--json" and (value := next(items, None)) is not None:
            legacy = value.endswith(".json") and not Path(value).is_dir()
            upgraded += ["--json-out", value] if legacy else [item, value]
        else:
            upgraded.append(item)
    if upgraded != argv:
        print("note: --json FILE is now --json-out FILE (--json alone prints the results on stdout)", file=sys.stderr)
    return upgraded


def _add_package(package: argparse.ArgumentParser) -> None:
    from torchport.package import TARGETS  # registry names only: importing it loads no target
    from torchport.serve.settings import DEFAULTS

    package.add_argument("bundle", help="a bundle directory (RUN_DIR/bundle)")
    package.add_argument("--to", required=True, metavar="|".join(TARGETS.names()), help="the engine to hand it to")
    package.add_argument("--out", required=True, help="the folder to write (refused if it exists and is not empty)")
    package.add_argument("--force", action="store_true", help="replace a non-empty --out")
    package.add_argument(
        "--variant",
        help="triton, kserve: also hand over this ONNX variant (int8, fp16, optimized) as the model NAME.VARIANT; "
        "mlflow: run it instead of model.onnx",
    )
    package.add_argument(
        "--variant-as-version", action="store_true", help="triton, kserve: the variant as version 2 of the model"
    )
    package.add_argument(
        "--max-batch-size",
        type=int,
        help=f"triton, kserve: Triton's max_batch_size (default {DEFAULTS.max_batch_size}, as torchport serve; "
        "0: no batching)",
    )
    package.add_argument("--storage-uri", help="kserve: where --out is uploaded (default pvc://torchport-models/NAME)")
    package.add_argument(
        "--image", help="kserve: the image built from docker/serve.Dockerfile (default torchport-serve:VERSION)"
    )
