"""``torchport train --nproc-per-node N``: the hand-over to torchrun, and what is refused before it happens.

Apart from ``torchport.cli`` because it replaces the process: nothing after it runs, so everything a worker
needs (its arguments, its environment) is settled here. No torch is imported on the way (tests/test_imports.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from torchport.errors import UsageError

if TYPE_CHECKING:
    from torchport.config import Config

# the `torchport train` options that only torchrun understands
LAUNCH_OPTIONS = ("nnodes", "node_rank", "rdzv_endpoint", "rdzv_id", "max_restarts", "local_addr")


def hand_over_to_torchrun(args: argparse.Namespace, config: Config) -> int:
    """Hand the process over to torchrun (exec, not a child: signals and the exit code are torchrun's own).

    Each worker runs ``torchport train`` with this command's options (--debug, --json, --overwrite, overrides);
    the stdout this process leaves them is the user's, so rank 0's --json document lands there."""
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
    check_run_dir_free(run_dir, args.resume, args.overwrite)  # rank 0 takes the lock; refuse early here
    workers = worker_args(Path(args.config), run_dir, args.overrides, args.resume, args.debug)
    for flag, given in (("--overwrite", args.overwrite), ("--json", args.json)):
        if given:
            workers.insert(workers.index("train") + 1, flag)
    command = torchrun_command(options, workers)
    env = agent_env(args.local_addr, args.debug)  # OMP_NUM_THREADS, GLOO_SOCKET_IFNAME, log levels
    print(f"torchrun: {shlex.join(command)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.environ.update(env)
    os.execv(command[0], command)
    return 0  # not reached


def check_run_dir_free(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """What rank 0's train() would refuse, refused before torchrun starts: one line and exit 2, not a failed job."""
    from torchport.runlock import check_free, has_checkpoints

    check_free(run_dir)
    if not resume and not overwrite and has_checkpoints(run_dir):
        raise UsageError(
            f"{run_dir} holds the checkpoints of an earlier run; continue it with --resume, or start over with"
            " --overwrite (deletes them)"
        )
