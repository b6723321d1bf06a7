"""Atomic, checksummed checkpoints that load with ``weights_only=True``.

A checkpoint is written whole to a temporary file, fsynced and renamed, so a crash leaves either the old file
or the new one, never half of one. Its SHA-256 is written beside it (``name.pt.sha256``) the same way; a file
whose bytes do not match is refused. Each save writes ``ckpt-<step>.pt`` and points ``last.pt`` at it; the
previous step file is kept, so ``--resume`` can fall back to it when the newest one is damaged.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from torchport.errors import CheckpointError

CHECKSUM_SUFFIX = ".sha256"
STEP_FILE = re.compile(r"^ckpt-(\d+)\.pt$")
KEEP_STEP_FILES = 2


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, payload: bytes) -> None:
    """Write bytes so that ``path`` holds either its old content or all of ``payload``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def serialize(state: dict[str, Any]) -> bytes:
    """The checkpoint's bytes, taken now: the tensors in ``state`` keep changing as training goes on."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_checkpoint(state: dict[str, Any], path: Path) -> str:
    """Save ``state`` atomically at ``path`` with its checksum beside it; return the SHA-256."""
    return write_checkpoint_bytes(serialize(state), path)


def write_checkpoint_bytes(payload: bytes, path: Path) -> str:
    digest = hashlib.sha256(payload).hexdigest()
    write_atomic(path, payload)
    write_atomic(path.with_name(path.name + CHECKSUM_SUFFIX), f"{digest}  {path.name}\n".encode())
    return digest


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint after checking its SHA-256; CheckpointError says what is wrong with which file."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    payload = path.read_bytes()
    checksum_file = path.with_name(path.name + CHECKSUM_SUFFIX)
    if not checksum_file.is_file():
        raise CheckpointError(f"checkpoint {path} has no checksum file {checksum_file.name}; refusing to load it")
    try:
        recorded = checksum_file.read_bytes().decode("ascii").split()
    except UnicodeDecodeError:
        raise CheckpointError(f"checkpoint {path}: its checksum file {checksum_file.name} is not text") from None
    expected = recorded[0] if recorded else ""
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupted or truncated: SHA-256 {actual[:12]}… does not match the recorded "
            f"{expected[:12] or '(empty)'}…"
        )
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a torchport checkpoint (no 'model' key)")
    return state


def _step_files(folder: Path) -> list[Path]:
    """Step checkpoints, newest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("ckpt-*.pt") if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _link_or_copy(source: Path, target: Path) -> None:
    """Point ``target`` at ``source``'s bytes atomically (a hard link where possible, else a copy)."""
    tmp = target.with_name(f".{target.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        tmp.write_bytes(source.read_bytes())
    os.replace(tmp, target)


def save_step_checkpoint(state: dict[str, Any], folder: Path, global_step: int, best: bool = False) -> Path:
    """Write ``ckpt-<step>.pt``, make ``last.pt`` (and ``best.pt`` if ``best``) that file, prune old step files."""
    return write_step_checkpoint(serialize(state), folder, global_step, best)


def write_step_checkpoint(payload: bytes, folder: Path, global_step: int, best: bool = False) -> Path:
    step_path = folder / f"ckpt-{global_step:08d}.pt"
    write_checkpoint_bytes(payload, step_path)
    for alias in ("last.pt", "best.pt") if best else ("last.pt",):
        for name in (step_path.name + CHECKSUM_SUFFIX, step_path.name):
            # The checksum first: a crash between the two leaves the alias failing its check, and resume falls back.
            _link_or_copy(folder / name, folder / (alias + name[len(step_path.name) :]))
    _fsync_dir(folder)
    for old in _step_files(folder)[KEEP_STEP_FILES:]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + CHECKSUM_SUFFIX).unlink(missing_ok=True)
    return step_path


def resume_candidates(folder: Path) -> Iterator[Path]:
    yield folder / "last.pt"
    yield from _step_files(folder)


def load_latest_good(
    folder: Path, check: Callable[[Path, dict[str, Any]], None] | None = None
) -> tuple[Path, dict[str, Any], list[str]]:
    """The newest checkpoint that passes its checks, with a line for each one refused on the way. ``check``
    may refuse one more (CheckpointError), e.g. a checkpoint whose weights do not fit the model."""
    refused: list[str] = []
    for candidate in resume_candidates(folder):
        if not candidate.exists():
            continue
        try:
            state = load_checkpoint(candidate)
            if check is not None:
                check(candidate, state)
            return candidate, state, refused
        except CheckpointError as exc:
            refused.append(str(exc))
    detail = f" ({refused[-1]})" if refused else ""
    raise CheckpointError(f"no usable checkpoint in {folder} to resume from{detail}")


class CheckpointWriter:
    """Step checkpoints written to disk on a background thread.

    The caller's thread only copies the tensors (the originals keep changing as training goes on); the
    serialization, writing, fsyncs and renames — nearly all of a checkpoint's cost — overlap with the next
    training steps. Writes keep their order. A write that fails is raised at the next ``submit`` or at
    ``close``, which waits until everything submitted is on disk.
    """

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        """``enabled=False`` (DDP ranks other than 0) makes every call a no-op."""
        self.folder, self.enabled = folder, enabled
        self._jobs: queue.Queue[tuple[dict[str, Any], int, bool] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        if enabled:
            self._thread.start()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:
                try:
                    write_step_checkpoint(serialize(job[0]), self.folder, job[1], job[2])
                except BaseException as exc:
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(f"writing a checkpoint in {self.folder} failed: {error}") from error

    def submit(self, state: dict[str, Any], global_step: int, best: bool = False) -> None:
        if not self.enabled:
            return
        self._raise()
        self._jobs.put((snapshot(state), global_step, best))

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self._raise()


def snapshot(value: Any) -> Any:
    """A copy of a checkpoint state whose tensors no later optimizer step can change."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(snapshot(item) for item in value)
    return value
