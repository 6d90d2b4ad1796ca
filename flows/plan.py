"""What each stage still has to do, asked of the data root (rule 1: idempotent and incremental).

Outputs are the truth (a clip file, an id in a shard); status records add what outputs cannot say
(failures and their class). Pure functions of the data root, so a re-run with nothing new plans nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from downloaders.base import Source
from store.layout import DataRoot, clip_name
from store.manifest import ManifestRow
from store.shard_ids import embedded_ids
from store.status import Seen, seen


@dataclass
class Plan:
    """Items to work, items already done, and items skipped with a recorded permanent failure."""

    todo: list[ManifestRow] = field(default_factory=list)
    done: int = 0
    skipped: int = 0
    adopt: list[ManifestRow] = field(default_factory=list)
    """Outputs that only need their status record (finished by an interrupted run, or their record was lost)."""
    folders: set[Path] = field(default_factory=set)
    """The folders the plan looked in for each item's output (acquire's audio folders), for the stage's stamp."""

    @property
    def total(self) -> int:
        return len(self.todo) + self.done + self.skipped + len(self.adopt)


def chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def spread(items: Sequence, unit_size: int, workers: int) -> list[list]:
    """``items`` in units of at most ``unit_size``, of about the same size and as many as whole rounds of
    ``workers`` need, so that every worker has a share until the end: 112 items with ``unit_size`` 100 on two
    workers are two units of 56, not 100 on one worker and 12 on the other. Costs at most ``workers - 1`` units
    more than :func:`chunks`."""
    if not items:
        return []
    rounds = math.ceil(math.ceil(len(items) / unit_size) / workers)
    return chunks(items, math.ceil(len(items) / (rounds * workers)))


def _split(rows: Iterable[ManifestRow], done: Callable[[ManifestRow], bool], permanent: set[str], force: bool,
           plan: Plan | None = None) -> Plan:
    """Done items are counted; the rest are worked, except recorded permanent failures unless forced. One pass
    over ``rows``, keeping only the rows to work: a plan costs memory for its work, not for the corpus.

    An ok record whose output has gone missing is worked again: outputs, not records, say what is done.
    """
    plan = plan if plan is not None else Plan()
    for row in rows:
        if done(row):
            plan.done += 1
        elif row.item_id in permanent and not force:
            plan.skipped += 1
        else:
            plan.todo.append(row)
    return plan


def ok_ids(root: DataRoot, stage: str, dataset: str) -> set[str]:
    return seen(root.status_dir(stage, dataset)).ok


def plan_acquire(rows: Iterable[ManifestRow], root: DataRoot, source: Source, *, force: bool) -> Plan:
    records = seen(root.status_dir("acquire", source.name))
    plan = Plan()

    def acquired(row: ManifestRow) -> bool:
        audio = source.audio_path(row, root)
        plan.folders.add(audio.parent)
        return row.item_id in records.ok and audio.exists()

    return _split(rows, acquired, records.permanent, force, plan)


def plan_preprocess(rows: Iterable[ManifestRow], root: DataRoot, dataset: str, *, force: bool) -> Plan:
    """Acquired items without a clip. A clip without an ok record (a killed run, a record set aside as
    damaged) is adopted."""
    acquired = ok_ids(root, "acquire", dataset)
    records = seen(root.status_dir("preprocess", dataset))
    clips = root.clip_names(dataset)
    plan = Plan()

    def has_clip(row: ManifestRow) -> bool:
        return clip_name(row.item_id) in clips

    def adopted(row: ManifestRow) -> bool:
        orphan = has_clip(row) and row.item_id not in records.ok
        if orphan:
            plan.adopt.append(row)
        return orphan

    eligible = (row for row in rows if row.item_id in acquired and not adopted(row))
    return _split(eligible, has_clip, records.permanent, force, plan)


def clipped(rows: Iterable[ManifestRow], root: DataRoot, dataset: str) -> Iterator[ManifestRow]:
    """Rows whose canonical clip exists and was recorded as made."""
    made = ok_ids(root, "preprocess", dataset)
    clips = root.clip_names(dataset)
    return (r for r in rows if r.item_id in made and clip_name(r.item_id) in clips)


def plan_embed(
    rows: Iterable[ManifestRow], root: DataRoot, dataset: str, model: str, space: str, *, force: bool
) -> Plan:
    """Clipped items without a vector of ``model`` in ``space``: vectors of another space do not count."""
    have = embedded_ids(root.shard_dir(model, dataset, space))
    records: Seen = seen(root.embed_status_dir(model, dataset, space))
    return _split(clipped(rows, root, dataset), lambda r: r.item_id in have, records.permanent, force)


def plan_verify(rows: Iterable[ManifestRow], root: DataRoot, dataset: str) -> Plan:
    """Clips not yet verified, or changed since they were; failed checks are always re-run."""
    records = seen(root.status_dir("verify", dataset), with_times=True)

    def verified(row: ManifestRow) -> bool:
        at_us = records.ok_at_us.get(row.item_id)
        return at_us is not None and at_us >= root.clip_path(dataset, row.item_id).stat().st_mtime_ns // 1000

    return _split(clipped(rows, root, dataset), verified, set(), True)
