"""Which shards ``verify`` has read in full and found sound, so that the next run reads only new or changed ones.

Reading every vector is what makes ``verify`` slow (614 GB for two million MERT items), and shards never change
once published, so each one's vectors are read once. The record keeps, per shard of one directory, the stamp of
its file when its vectors were read and found finite and unit-norm: size, inode, mtime and ctime, in nanoseconds.

Why a stat stamp and not a hash: a shard is published by a hard link of a finished temporary file and never
written again (ARCHITECTURE.md rules 2 and 3). New content under a shard's name is therefore either a new file
(another inode: a re-embed, a copy, a restore from backup) or bytes written in place (a tool, a user, a disk
error the kernel sees), which moves mtime and ctime; ctime cannot be set back by anyone, unlike mtime with
``touch``. The stamp is taken before the vectors are read, so a change during the read shows next time. A hash of
the attributes would miss changed vectors, and a hash of the file would read all of it — the cost this record
exists to avoid. What no stat can see, bytes rotting under an unchanged inode, is found by removing the record:
the next ``verify`` reads every vector again.

The record is a cache, never the truth: one that cannot be read, or was written for another norm tolerance,
is ignored and every shard is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from store.atomic import write_text_atomic

RECORD_VERSION = 1


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file's bytes without reading them (see the module docstring)."""

    size: int
    inode: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        stat = os.stat(path)
        return cls(stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns)


def read_record(path: Path | None, checks: str) -> dict[str, FileStamp]:
    """Shard name → stamp of the shards whose vectors were found sound under ``checks`` (the rules applied, such
    as the norm tolerance); empty when there is no record, or it cannot be read, or it was made under other rules."""
    if path is None or not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
        if record["version"] != RECORD_VERSION or record["checks"] != checks:
            return {}
        return {name: FileStamp(**stamp) for name, stamp in record["shards"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def write_record(path: Path, checks: str, sound: dict[str, FileStamp]) -> None:
    """Replace the record (atomically) with exactly the shards found sound now: shards gone since (set aside,
    deleted) leave it."""
    record = {"version": RECORD_VERSION, "checks": checks,
              "shards": {name: asdict(stamp) for name, stamp in sorted(sound.items())}}
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
