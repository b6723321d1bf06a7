"""One writer per run directory: an advisory lock on ``RUN_DIR/.lock``, held while a stage writes there.

A POSIX record lock (``fcntl.lockf``) because the kernel drops it when its holder ends, however it ends (SIGKILL
and the OOM killer included), and because it belongs to the process, not to the open file: the DataLoader
workers a holder forks do not inherit it (with ``flock`` they did, and a resume started right after a SIGKILL
was refused until the orphaned workers noticed and exited, seconds later). A holder that ended without
releasing leaves only its pid in the file; the next writer reports it and takes over. Within one process the
lock is re-entrant: `run` holds it across its stages and `train` inside it takes it again (the file is opened
once per process: closing any descriptor of it would drop a POSIX lock). Under torchrun only global rank 0
takes it (the other ranks do not write), so the ranks of one job never lock each other out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from torchport.errors import UsageError

LOCK_NAME = ".lock"
_held: dict[str, int] = {}  # resolved run dir -> how many nested holders in this process


def _holder(fd: int) -> str:
    """What the file says about its holder: ``pid 123 on host (train)``, or '' when it names none."""
    try:
        fields = os.pread(fd, 256, 0).decode(errors="replace").split()
    except OSError:
        return ""
    if len(fields) < 3:
        return ""
    return f"pid {fields[0]} on {fields[1]} ({fields[2]})"


def _open_locked(run_dir: Path) -> int:
    """The lock file's descriptor, locked; UsageError naming the holder when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UsageError(f"{run_dir}: cannot open the run directory's lock {path}: {exc.strerror}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            _refuse(fd, run_dir)
        os.close(fd)
        raise UsageError(f"{run_dir}: cannot lock the run directory ({path}): {exc.strerror}") from None
    return fd


def _refuse(fd: int, run_dir: Path) -> NoReturn:
    holder = _holder(fd) or "another process"
    os.close(fd)
    raise UsageError(
        f"{run_dir} is in use by another torchport process ({holder}); wait for it to end, or choose another run"
        " directory"
    )


def check_free(run_dir: Path) -> None:
    """Refuse now if another process holds ``run_dir`` (a launcher's early check; it takes nothing)."""
    if str(run_dir.resolve()) in _held or not (run_dir / LOCK_NAME).exists():
        return
    os.close(_open_locked(run_dir))


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, verb: str) -> Iterator[str | None]:
    """Hold ``run_dir`` for this process; yields what a holder that died without releasing left (its pid and
    host), or None. Another live holder: UsageError naming its pid, exit 2."""
    key = str(run_dir.resolve())
    if key in _held:
        _held[key] += 1
        try:
            yield None
        finally:
            _held[key] -= 1
        return
    fd = _open_locked(run_dir)
    try:
        previous = _holder(fd) or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {verb}\n".encode(), 0)
        _held[key] = 1
        yield previous
    finally:
        _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # released cleanly: the file names no holder
        os.close(fd)  # and the kernel drops the lock


def holding(run_dir: Path, verb: str) -> contextlib.AbstractContextManager[object]:
    """The run directory's lock while ``verb`` writes there; a bundle outside a run directory has none to take."""
    return run_dir_lock(run_dir, verb) if (run_dir / "config.yaml").is_file() else contextlib.nullcontext()


def has_checkpoints(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(path.name.endswith(".pt") for path in folder.iterdir())
