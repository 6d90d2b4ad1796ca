"""A benchmark dataset as evaluation on it sees it: every item that has a vector of the runs' model and space and
at least one caption, with all its captions, and the captions a source marks as validated.

The Song Describer Dataset keeps, per track, ``extra["is_valid_subset"]``: one flag per caption, true for the
captions its annotators validated. Its validated subset is those captions and only the items left with one; a
row without the flag has no validated caption. A dataset where no row has it has no such subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from store.errors import InvalidInputError, MissingInputError
from store.layout import DataRoot
from store.manifest import ManifestRow, read_manifest
from store.shard_index import vector_locations
from training.data import Item, ShardReader, manifest_item

VALID_FLAG = "is_valid_subset"
VALID_SUBSET = "validated captions"


@dataclass(frozen=True)
class CaptionSet:
    """Items and their captions: caption ``i`` describes item ``owners[i]``."""

    item_ids: list[str]
    audio: np.ndarray
    """float32 ``[items, dim]``, in ``item_ids`` order."""
    item_tags: list[set[str]]
    captions: list[str]
    owners: np.ndarray

    def keep(self, captions: np.ndarray) -> CaptionSet:
        """Only the captions where ``captions`` (one bool each) is true, and only the items left with one."""
        kept = np.unique(self.owners[captions])
        renumbered = np.full(len(self.item_ids), -1, dtype=np.int64)
        renumbered[kept] = np.arange(len(kept))
        return CaptionSet([self.item_ids[i] for i in kept], self.audio[kept], [self.item_tags[i] for i in kept],
                          [text for text, keep in zip(self.captions, captions, strict=True) if keep],
                          renumbered[self.owners[captions]])


@dataclass(frozen=True)
class Benchmark:
    dataset: str
    items: CaptionSet
    """Every item with a vector and a caption, all its captions."""
    subsets: dict[str, CaptionSet]
    """Named parts of ``items`` (:data:`VALID_SUBSET` when the source flags validated captions)."""
    groups: set[str]
    """The groups of every row of the dataset, with a vector or not: the recordings a run must not have learnt."""
    skipped: dict[str, int]
    """Rows left out, by reason (``no_vector``, ``no_caption``)."""


def benchmark_groups(root: DataRoot, dataset: str) -> set[str]:
    """The groups of every row of ``dataset``'s manifest."""
    return _groups(_rows(root, dataset))


def load_benchmark(root: DataRoot, dataset: str, model: str, space: str) -> Benchmark:
    """``dataset``'s items with a ``model`` vector of ``space``, their captions and flagged subsets."""
    rows = _rows(root, dataset)
    locations = vector_locations(root, model, dataset, space).locations
    items: list[Item] = []
    owners: list[int] = []
    flags: list[bool] = []
    skipped = {"no_vector": 0, "no_caption": 0}
    for row in rows:
        location = locations.get(row.item_id)
        if location is None or not row.captions:
            skipped["no_vector" if location is None else "no_caption"] += 1
            continue
        owners += [len(items)] * len(row.captions)
        flags += _valid_flags(row)
        items.append(manifest_item(row, location))
    if len(items) < 2:
        raise InvalidInputError(f"{dataset} has {len(items)} items with both a {model} vector of space {space} and a "
                                f"caption; evaluation needs at least two (`musictext embed {dataset} --model {model}`)")
    whole = CaptionSet([item.item_id for item in items], _read(items), [set(item.tags) for item in items],
                       [caption for item in items for caption in item.captions], np.array(owners))
    flagged = any(VALID_FLAG in row.extra_fields for row in rows)
    subsets = {VALID_SUBSET: whole.keep(np.array(flags))} if flagged and any(flags) else {}
    return Benchmark(dataset, whole, subsets, _groups(rows), skipped)


def _rows(root: DataRoot, dataset: str) -> list[ManifestRow]:
    rows = read_manifest(root.manifest(dataset))
    if not rows:
        raise MissingInputError(f"{dataset} has no manifest at {root.manifest(dataset)}; catalogue it first "
                                f"(`musictext ingest {dataset}`)")
    return rows


def _groups(rows: Sequence[ManifestRow]) -> set[str]:
    return {row.group or row.item_id for row in rows}


def _valid_flags(row: ManifestRow) -> list[bool]:
    flags = row.extra_fields.get(VALID_FLAG)
    if flags is None:
        return [False] * len(row.captions)
    if not isinstance(flags, list) or len(flags) != len(row.captions) or not all(isinstance(f, bool) for f in flags):
        raise InvalidInputError(f"{row.item_id}: {VALID_FLAG} must hold one true/false per caption ({len(row.captions)}"
                                f"), got {flags!r}; catalogue {row.dataset} again")
    return flags


def _read(items: Sequence[Item]) -> np.ndarray:
    reader = ShardReader()
    try:
        return reader.read(items)
    finally:
        reader.close()
