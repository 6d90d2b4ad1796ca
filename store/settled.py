"""Settled stages: what a stage run left with nothing to do, and what it read to know it.

Planning asks every item of the corpus what is done (records, clips, shards): work that grows with the corpus
even when nothing is new. So a stage run that leaves nothing to do writes a stamp,
``settled/<stage>/<dataset>/<key>.json``, holding a digest of its inputs (settings, options, models, code
version) and the state of every file and folder its planning read: the manifest, the status folders and every
record in them, the shards, the folders of clips and audio. A folder's state changes whenever an entry is added,
removed or renamed in it, and everything here publishes by rename (:mod:`store.atomic`); a file damaged in place
changes its own state, which is why the folders of few files are watched file by file. A
later run that finds the same digest and states skips the stage without planning; any difference (a new
manifest row, a deleted clip, a record of another run, a changed setting) and it plans as before.

The inputs' states are taken *before* the run plans, and only the folders the stage itself writes (under its
lock) after it has worked: a change another process makes while the run works is never folded into the stamp.
A stamp that is missing, damaged or of another format counts as "not settled": it only ever costs a full plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store import __version__
from store.atomic import write_text_atomic
from store.layout import DataRoot
from store.names import check_name

FORMAT = 1


def file_state(path: Path) -> list[int] | None:
    """What changes when ``path``'s contents change by rename: its inode and its mtime (a folder's changes with
    every entry added, removed or renamed in it); ``None`` for a path that does not exist."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return [info.st_ino, info.st_mtime_ns, 0 if stat.S_ISDIR(info.st_mode) else info.st_size]


def states(base: Path, paths: Iterable[Path], whole: Iterable[Path] = ()) -> dict[str, list[int] | None]:
    """The states of ``paths``, and of ``whole`` folders with every file in them: a file damaged or rewritten in
    place changes its own mtime, not its folder's. Worth it for folders of few files (status records after
    compaction, shards, reports); clip and audio folders hold a file per item and are watched as folders."""
    found = {path: file_state(path) for path in {*paths, *whole}}
    for folder in whole:
        if folder.is_dir():
            found.update((Path(entry.path), file_state(Path(entry.path))) for entry in os.scandir(folder))
    return dict(sorted((_key(base, path), state) for path, state in found.items()))


def _key(base: Path, path: Path) -> str:
    """``path`` relative to the data root ``base`` when it lies under it: a moved or copied data root has new
    inodes, so its stamps hold nowhere but where they were written (and the stages plan once there)."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def digest(inputs: dict[str, Any]) -> str:
    """A digest of a stage's inputs, with the code version: a new version plans once before it trusts a stamp."""
    text = json.dumps({"version": __version__, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Stamp:
    """A settled stage: its inputs' digest, the states of what it read, and the counts to show for it."""

    inputs: str
    watched: dict[str, list[int] | None]
    summary: dict[str, Any]

    def holds(self, base: Path, inputs: str) -> bool:
        """Whether nothing the stage reads has changed since the stamp was written under the data root ``base``."""
        return self.inputs == inputs and all(file_state(base / path) == state for path, state in self.watched.items())


def stamp_path(root: DataRoot, stage: str, dataset: str, key: str = "all") -> Path:
    """``settled/<stage>/<dataset>/<key>.json``; ``key`` tells apart the runs of one stage on one dataset that plan
    differently (the embed of each model, the verify of each set of models)."""
    names = (check_name(stage, "stage"), check_name(dataset, "dataset"))
    return root.path.joinpath("settled", *names, f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json")


def read_stamp(path: Path) -> Stamp | None:
    """The stamp at ``path``, or ``None`` when there is none or it cannot be read (then the stage plans)."""
    try:
        data = json.loads(path.read_bytes())
        if data.get("format") != FORMAT:
            return None
        return Stamp(data["inputs"], data["watched"], data["summary"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def settled(base: Path, path: Path, inputs: str) -> dict[str, Any] | None:
    """The counts a settled stage recorded, when its stamp at ``path`` still holds for ``inputs`` under the data
    root ``base``; else ``None``."""
    stamp = read_stamp(path)
    return stamp.summary if stamp is not None and stamp.holds(base, inputs) else None


def record(path: Path, inputs: str, watched: dict[str, list[int] | None], summary: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps({"format": FORMAT, "inputs": inputs, "watched": watched, "summary": summary},
                                       sort_keys=True, default=str))


def forget(path: Path) -> None:
    """Drop a stamp: the stage's next run plans in full."""
    path.unlink(missing_ok=True)
