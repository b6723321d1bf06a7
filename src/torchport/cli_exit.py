"""How the ``torchport`` process starts and ends, apart from what its verbs do.

It ends with ``os._exit`` after doing by hand what Python's exit does for Python code, in the same order:
thread pools are stopped and every non-daemon thread is joined (``threading._shutdown``), the ``atexit``
handlers run (multiprocessing's, MLflow's, a plugin's), and Python's and C's output buffers are flushed. What
is skipped is C's exit, the C++ static destructors of torch's libraries: with the CUDA build they page in
128 MiB of the CUDA libraries' code and take 0.4 s, so a CPU training run's peak memory came at its very last
instant. Nothing of ours is left for them to do: every file torchport writes is closed (and renamed into place)
before its verb returns. What a plain ``os._exit`` would lose is only what Python's own shutdown does beyond
that: objects' ``__del__`` at the very end (a file a plugin never closed), and a wrapper around the module, such as
``python -m cProfile -m torchport.cli``, which writes its profile after the module returns. Set
``TORCHPORT_FULL_EXIT=1`` for those: the process then ends as any Python program does.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sys
import threading
from typing import NoReturn


def arrow_allocates_with_malloc() -> None:
    """Arrow's own allocator (mimalloc) keeps the pages a table read has freed: about 120 MiB more under every
    later peak of training on a wide Parquet file. With the C library's malloc, ``data/tables.py`` gives them
    back. Only a default: the user's own ARROW_DEFAULT_MEMORY_POOL wins, and Arrow reads it once, on its first
    allocation."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def exit_status(stop: SystemExit) -> int:
    """The status ``sys.exit`` would give: None is 0, an int is itself, anything else is printed and is 1."""
    if stop.code is None or isinstance(stop.code, int):
        return stop.code or 0
    print(stop.code, file=sys.stderr)
    return 1


def exit_now(code: int) -> NoReturn:
    # What Python's own exit does first: stop idle thread pools (concurrent.futures), then join every non-daemon
    # thread. Joining them without the first step would wait forever on an idle pool's workers.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None or os.environ.get("TORCHPORT_FULL_EXIT") == "1":  # Python's own exit, destructors and all
        sys.exit(code)
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a closed pipe or stream, or none at all
            stream.flush()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)  # what native libraries printed through C's stdio
    os._exit(code)
