"""Atomic file creation: a killed process leaves the old file or the new one, never half of one.

Temporary files live beside their target as ``.<name>.<pid>.<random>.tmp`` so a later run can tell a
stale one (its process is gone) from one another live process is still writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def temp_path_for(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(target: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``target``.

    With ``overwrite=False`` the rename refuses to replace an existing target (``FileExistsError``),
    which is how append-only outputs claim a new name safely against concurrent writers.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(target)
    try:
        yield temp
        _fsync_file(temp)
        if overwrite:
            os.replace(temp, target)
        else:
            os.link(temp, target)
            temp.unlink()
        fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as temp:
        temp.write_bytes(data)


def write_text_atomic(target: Path, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(directory: Path) -> list[Path]:
    """Delete temporary files left under ``directory`` by processes that no longer run."""
    if not directory.exists():
        return []
    removed = []
    for path in directory.rglob(".*.tmp"):
        match = _TEMP.match(path.name)
        if match and not _pid_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def locked(target: Path, on_busy: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the advisory lock of ``target`` (``.<name>.lock`` beside it) for as long as the block runs.

    Workers (threads or processes) that would write the same file take turns; the lock file stays, empty.
    ``on_busy`` is called once, before waiting, when another holder has the lock (to say who is waited for).
    The kernel drops the lock when its process dies, so a killed holder never blocks the next one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.with_name(f".{target.name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_busy is not None:
                on_busy()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
