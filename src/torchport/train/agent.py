"""torchrun, run in this process so that its failures reach the user as one line.

``python -m torchport.train.agent ARGS`` takes exactly torchrun's arguments (``python -m torch.distributed.run
ARGS`` runs the same job); `torchport train --nproc-per-node` execs it. torchrun still does all the work —
rendezvous, worker processes, elastic restarts — but a rendezvous that cannot be reached, a node that never
joins, or a worker group that fails for good ends with one line (what failed, where, what to try) and a
non-zero exit, instead of pages of tracebacks. ``--debug`` (``TORCHPORT_DEBUG=1``) keeps torchrun's own logs.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from torchport.errors import first_line

EXIT_FAILED = 1
EXIT_REFUSED = 2  # a worker refused its config or checkpoint (torchport.errors): a restart would refuse again


def _endpoint(argv: list[str]) -> str:
    for index, arg in enumerate(argv):
        for flag in ("--rdzv-endpoint", "--rdzv_endpoint", "--master-addr", "--master_addr"):
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
            if arg == flag and index + 1 < len(argv):
                return argv[index + 1]
    return "this machine"


def _worker_failure(exc: BaseException) -> str | None:
    """A worker killed by a signal could not say why itself; one that exited with a code already said it."""
    rank, failure = exc.get_first_failure()  # type: ignore[attr-defined]
    if failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        return f"worker rank {rank} (pid {failure.pid}) was killed by {name}; no restarts left (--max-restarts)"
    return None


def describe(exc: BaseException, endpoint: str) -> str | None:
    """The one line for a failure of the agent, or None when the workers already printed theirs."""
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import (
        RendezvousClosedError,
        RendezvousConnectionError,
        RendezvousError,
        RendezvousTimeoutError,
    )

    cause = first_line(exc.__cause__, "") if exc.__cause__ is not None else ""
    if isinstance(exc, ChildFailedError):
        return _worker_failure(exc)
    if isinstance(exc, RendezvousTimeoutError):
        return (
            f"rendezvous at {endpoint}: not every node joined in time ({first_line(exc)}); start the same command on"
            " every node, with the same --rdzv-endpoint and --rdzv-id"
        )
    if isinstance(exc, RendezvousConnectionError | DistError):
        detail = cause or first_line(exc, type(exc).__name__)
        return (
            f"rendezvous at {endpoint}: cannot reach the c10d store ({detail[:120]}); if the job was running, the"
            " network to that node failed: rerun with --resume once it is back; if it never started, check that"
            " the node named there runs `torchport train` and is reachable (on that node, --local-addr with the"
            " endpoint's address if its hostname resolves elsewhere)"
        )
    if isinstance(exc, RendezvousClosedError):
        return f"rendezvous at {endpoint}: the job was closed by another node (it finished or gave up); start a new job"
    if isinstance(exc, RendezvousError):
        return f"rendezvous at {endpoint}: {first_line(exc, type(exc).__name__)}"
    return None


def _read_timeout(argv: list[str]) -> float:
    """The rendezvous store's read timeout from ``--rdzv-conf`` (torch's default: 60 s)."""
    for arg in argv:
        if arg.startswith(("--rdzv-conf=", "--rdzv_conf=")):
            for item in arg.split("=", 1)[1].split(","):
                key, _, value = item.partition("=")
                if key == "read_timeout" and value.isdigit():
                    return float(value)
    return 60.0


def _bound_store_calls(seconds: float) -> None:
    """Make every call of the agent on the rendezvous store end within ``seconds``.

    torch's TCPStore client retries a read whose peer stopped answering (a cut link sends no reset) for as
    long as the link stays down, so an agent polling the store would wait forever, its workers long dead. The
    call runs in a helper thread; if it has not returned in time the agent sees the connection error it would
    have seen had the store closed the connection, and ends the job (the helper thread is left to the OS).
    """
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend as backend
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

    original = backend.C10dRendezvousBackend._call_store

    def bounded(self: Any, store_op: str, *args: Any, **kwargs: Any) -> Any:
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["value"] = original(self, store_op, *args, **kwargs)
            except BaseException as exc:
                outcome["error"] = exc

        helper = threading.Thread(target=call, name="torchport-store-call", daemon=True)
        helper.start()
        helper.join(seconds)
        if helper.is_alive():
            raise RendezvousConnectionError(f"the store did not answer within {seconds:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    backend.C10dRendezvousBackend._call_store = bounded  # type: ignore[method-assign]


def _no_restart_after_refusal() -> None:
    """A worker that exited with code 2 refused its config or checkpoint; restarting the group cannot change
    that (e.g. after a node left an elastic job, the smaller group refuses a checkpoint written by the larger
    one), so the agent ends the job at once instead of spending its restarts, a rendezvous each, on it."""
    from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent

    original = LocalElasticAgent._monitor_workers

    def monitor(self: Any, worker_group: Any) -> Any:
        result = original(self, worker_group)
        if result.is_failed() and any(f.exitcode == EXIT_REFUSED for f in result.failures.values()):
            self._remaining_restarts = 0
        return result

    LocalElasticAgent._monitor_workers = monitor  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = os.environ.get("TORCHPORT_DEBUG") == "1"
    if not debug:
        # torchrun logs every restart and teardown at WARNING with multi-line banners; we say what matters.
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
        logging.getLogger("torch.distributed.launcher").setLevel(logging.CRITICAL)
    from torch.distributed.run import parse_args, run

    args = parse_args(argv)
    _bound_store_calls(_read_timeout(argv) + 1)
    _no_restart_after_refusal()
    # a worker that prints its one error line touches this file (cli._tell_the_agent): a cut link fails the worker
    # and, a moment later, this agent's next store call; the worker's line is the one that says what happened
    said = Path(tempfile.mkdtemp(prefix="torchport-agent-")) / "worker-said"
    os.environ["TORCHPORT_WORKER_SAID"] = str(said)
    try:
        run(args)
    except Exception as exc:
        if debug:
            raise
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        line = describe(exc, _endpoint(argv))
        if line is None and not isinstance(exc, ChildFailedError):
            line = f"torchrun: {type(exc).__name__}: {first_line(exc)}"
        if line and said.exists() and not isinstance(exc, ChildFailedError):
            line = None  # the worker already said it
        if line:
            print(f"error: {line}", file=sys.stderr, flush=True)
        if isinstance(exc, ChildFailedError) and exc.get_first_failure()[1].exitcode > 0:
            return int(exc.get_first_failure()[1].exitcode)  # the worker's own code (2: bad config or checkpoint)
        return EXIT_FAILED
    finally:
        shutil.rmtree(said.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
