"""The ``torchport`` command: parse, call the stage function, print, map errors to exit codes.

Exit codes: 0 ok, 1 a check failed (parity, accuracy gate), 2 bad usage or config. A user sees one line per
error; the traceback only with ``--debug``. Heavy imports happen inside the verbs so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from torchport.errors import TorchportError, UsageError

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
    from torchport.pipeline import dry_build

    config = _load(args)
    shape = dry_build(config)
    _console().print(f"[green]ok[/] {args.config}: config '{config.name}' is valid; model {shape}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from torchport.train.loop import train

    config = _load(args)
    summary = train(config, Path(args.run_dir) if args.run_dir else None, resume=args.resume, console=_console())
    best = summary["best"].get(summary["metric"])
    best_text = f"{summary['metric']} {best:.4f}" if best is not None else ""
    _console().print(
        f"[green]trained[/] {config.name}: best {best_text} at epoch {summary['best'].get('epoch', 0) + 1}, "
        f"{summary['samples_per_second']} samples/s, {summary['train_seconds']:.1f} s"
    )
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

    export_stage(Path(args.run_dir), console=_console())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from torchport.pipeline import verify_stage

    return 0 if verify_stage(Path(args.bundle), console=_console()) else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    from torchport.bundle.inspect import print_bundle

    print_bundle(Path(args.bundle), _console())
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from torchport.bundle.manifest import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from torchport.pipeline import run_pipeline

    config = _load(args)
    ok = run_pipeline(config, Path(args.run_dir) if args.run_dir else None, console=_console())
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
    verb("blocks", cmd_blocks, "list the built-in blocks and their arguments")
    verb("export", cmd_export, "export a trained run to ONNX (+ AOTInductor) and write its bundle").add_argument(
        "run_dir", help="a run directory written by `torchport train`"
    )
    verb("verify", cmd_verify, "check every artifact of a bundle against PyTorch").add_argument(
        "bundle", help="a bundle directory (RUN_DIR/bundle)"
    )
    verb("inspect", cmd_inspect, "print a readable summary of a bundle").add_argument("bundle")
    verb("schema", cmd_schema, "print the JSON Schema of a published format").add_argument("name", choices=["manifest"])
    run = verb("run", cmd_run, "train, export, verify and bundle in one go (default: the digits CNN)")
    _config_args(run, optional=True)
    run.add_argument("--run-dir", help="where to write (default: runs/<config name>)")
    return parser


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
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"internal error: {type(exc).__name__}: {first_line} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
