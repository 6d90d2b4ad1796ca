"""The groups a training run learnt from: ``runs/<run_id>/train_groups.jsonl``, sorted, one JSON string a line.

Evaluation on a benchmark must know whether a run saw any of the benchmark's recordings, and the run's split
cannot be worked out again from its configuration: a dataset catalogued after training holds out more groups and
so changes it. The trainer therefore writes the groups of its training split when a run starts, and each resumed
session adds those of its own split (a catalogue in between may have changed it). A run resumed without a record
(started before records were kept) stays without one: what its earlier sessions saw is unknown.

JSON strings, because a group may hold any character (the local source's groups are file paths, and a path may
hold a newline); sorted, so that a record of millions of groups is read as a stream and merged with a new split
in one pass.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

from store.atomic import write_text_atomic

TRAIN_GROUPS_FILE = "train_groups.jsonl"


def train_groups_path(run_dir: Path) -> Path:
    return Path(run_dir) / TRAIN_GROUPS_FILE


def record_train_groups(run_dir: Path, groups: Iterable[str], *, resumed: bool) -> None:
    """Write ``groups`` as the run's record (a fresh start), or add them to the record a resumed run has."""
    path = train_groups_path(run_dir)
    if resumed and not path.is_file():
        return
    new = sorted(set(groups))
    merged = _distinct(heapq.merge(new, _read(path))) if resumed else new
    write_text_atomic(path, "".join(json.dumps(group) + "\n" for group in merged))


def trained_among(run_dir: Path, groups: Collection[str]) -> set[str] | None:
    """Which of ``groups`` the run trained on, read as a stream; ``None`` when it has no record."""
    path = train_groups_path(run_dir)
    if not path.is_file():
        return None
    return {group for group in _read(path) if group in groups}


def _read(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _distinct(ordered: Iterable[str]) -> Iterator[str]:
    return (group for group, _ in itertools.groupby(ordered))
