"""The manifest: one Parquet file per dataset, one row per item, rewritten atomically.

A plain schema (no pandas metadata, lists as Arrow lists, source-specific fields as JSON text) so any
Parquet reader can use it without our code.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.atomic import atomic_path
from store.quarantine import conformed, read_parquet, skip_damaged
from store.splits import HELD_OUT_SPLIT, canonical_split

SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("captions", pa.list_(pa.string())),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("license", pa.string()),
        pa.field("extra", pa.string()),
        pa.field("group", pa.string()),
        pa.field("held_out", pa.bool_()),
    ]
)
LEGACY_EVAL_FLAGS = ("is_audioset_eval_mcaps",)
"""``extra`` keys that marked evaluation audio before ``held_out`` was a column."""


@dataclass(frozen=True)
class ManifestRow:
    item_id: str
    dataset: str
    source: str
    split: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    captions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    license: str | None = None
    extra: str = "{}"
    group: str | None = None
    """The recording the item's audio comes from, in a namespace shared by every source that publishes the same
    recordings (``youtube:<video id>``, ``jamendo:<track number>``), else ``<dataset>:<id>``. Items of one group
    never land on both sides of a train/test split, in any dataset."""
    held_out: bool = False
    """The recording is evaluation audio (a test split, or another benchmark's test audio): no item of its group
    trains, in any dataset of the data root. The catalog sets it for every ``test`` row; sources set it for the
    rest (MusicBench's train rows cut from MusicCaps' evaluation clips)."""

    @property
    def extra_fields(self) -> dict[str, Any]:
        return json.loads(self.extra)

    @staticmethod
    def encode_extra(fields: dict[str, Any]) -> str:
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


@dataclass
class ManifestUpdate:
    """A catalog merged into a manifest: the new table, and how many of its rows are new or changed."""

    table: pa.Table
    added: int = 0
    changed: int = 0

    @property
    def dirty(self) -> bool:
        return bool(self.added or self.changed)


def rows_to_table(rows: Iterable[ManifestRow]) -> pa.Table:
    records = [asdict(row) for row in rows]
    for record in records:
        record["captions"] = list(record["captions"])
        record["tags"] = list(record["tags"])
    return pa.Table.from_pylist(records, schema=SCHEMA)


def table_to_rows(table: pa.Table) -> list[ManifestRow]:
    rows = [
        ManifestRow(**{**record, "captions": tuple(record["captions"] or ()), "tags": tuple(record["tags"] or ()),
                       "held_out": bool(record["held_out"])})
        for record in table.select(SCHEMA.names).to_pylist()
    ]
    return [row if row.group is not None else _from_legacy(row) for row in rows]


def _from_legacy(row: ManifestRow) -> ManifestRow:
    """A row of a manifest written before ``group`` and ``held_out`` were columns, with both filled from the
    ``extra`` keys they were kept in, so an old manifest still never leaks (the next catalog rewrites it)."""
    extra = row.extra_fields
    video = extra.get("ytid") or (row.source if extra.get("segment_downloaded") else None)
    if video:
        group = f"youtube:{video}"
    elif extra.get("group"):
        group = f"{row.dataset}:{extra['group']}"
    else:
        group = row.item_id.split("@", 1)[0]
    held_out = any(extra.get(flag) is True for flag in LEGACY_EVAL_FLAGS)
    return canonical_row(replace(row, group=group, held_out=held_out))


def canonical_row(row: ManifestRow) -> ManifestRow:
    """``row`` as the catalog writes it: its split in the shared vocabulary (:mod:`store.splits`), held out
    when that split is ``test``. A row without a group is a source's bug, said here rather than found later as
    a leak."""
    if not row.group:
        raise ValueError(f"{row.item_id}: the {row.dataset} source left its group empty; every row names the "
                         "recording its audio comes from")
    try:
        split = canonical_split(row.split)
    except ValueError as error:
        raise ValueError(f"{row.item_id}: {error}") from None
    return replace(row, split=split, held_out=row.held_out or split == HELD_OUT_SPLIT)


def read_manifest_table(path: Path) -> pa.Table:
    """A manifest as an Arrow table, empty when there is none or it was damaged (then set aside, as
    :func:`read_manifest` says); legacy rows without ``group`` get it here, so the table is always current."""
    if not path.exists():
        return SCHEMA.empty_table()
    table = skip_damaged(path, lambda p: read_parquet(p, SCHEMA))
    if table is None:
        return SCHEMA.empty_table()
    return rows_to_table(table_to_rows(table)) if table.column("group").null_count else table


def read_manifest(path: Path) -> list[ManifestRow]:
    """Rows of a manifest, or ``[]`` when the dataset has not been catalogued yet or its manifest was damaged:
    that one is set aside (:mod:`store.quarantine`) and the next catalog rebuilds it from the source."""
    return table_to_rows(read_manifest_table(path))


ROWS_PER_BATCH = 10_000
ROW_GROUP = 50_000
"""Rows per Parquet row group: a reader that streams the manifest holds one group's pages at a time."""


def iter_manifest(path: Path) -> Iterator[ManifestRow]:
    """The rows of the manifest at ``path``, decoded from the file ``ROWS_PER_BATCH`` at a time: planning a million
    rows holds one row group and one batch of Python rows, not the manifest. A damaged batch raises; flows check the
    file first (:func:`count_manifest`), which sets a damaged one aside."""
    for table in _checked_batches(path):
        yield from table_to_rows(table)


def count_manifest(path: Path) -> int:
    """How many rows the manifest at ``path`` has, decoding and checking every one (in bounded memory); 0 when there
    is none, or it was damaged and is now set aside (:mod:`store.quarantine`)."""
    if not path.exists():
        return 0
    return skip_damaged(path, lambda p: sum(table.num_rows for table in _checked_batches(p))) or 0


def _checked_batches(path: Path) -> Iterator[pa.Table]:
    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=ROWS_PER_BATCH):
            yield conformed(pa.Table.from_batches([batch]), SCHEMA)


def manifest_ids(path: Path) -> list[str]:
    """The item ids of a manifest, reading that one column only."""
    if not path.exists():
        return []
    table = skip_damaged(path, lambda p: pq.ParquetFile(p).read(columns=["item_id"]))
    return table.column("item_id").to_pylist() if table is not None else []


def write_manifest(path: Path, rows: Iterable[ManifestRow] | pa.Table) -> None:
    table = rows if isinstance(rows, pa.Table) else rows_to_table(rows)
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd", row_group_size=ROW_GROUP)


MERGE_BATCH = 10_000


def merge_rows(existing: pa.Table, incoming: Iterable[ManifestRow]) -> ManifestUpdate:
    """New rows are appended and changed rows replaced in place, in first-seen order; nothing is ever dropped.

    Streaming: ``incoming`` is read in batches, each looked up in the existing table's ids by Arrow, and only the
    existing rows it names become Python objects to compare; the rest of the manifest stays columnar. Keeping rows
    that a source no longer lists is deliberate: their clips and embeddings stay valid.
    """
    ids = existing.column("item_id").combine_chunks()
    latest: dict[int, ManifestRow] = {}
    original: dict[int, ManifestRow] = {}
    appended: dict[str, ManifestRow] = {}
    rows = iter(incoming)
    while batch := list(itertools.islice(rows, MERGE_BATCH)):
        positions = pc.index_in(pa.array([row.item_id for row in batch], pa.string()), value_set=ids).to_pylist()
        found = sorted({p for p in positions if p is not None} - original.keys())
        if found:
            original.update(zip(found, table_to_rows(existing.take(pa.array(found, pa.int64()))), strict=True))
        for row, position in zip(batch, positions, strict=True):
            if position is None:
                appended[row.item_id] = row
            else:
                latest[position] = row
    replaced = {position: row for position, row in latest.items() if row != original[position]}
    if not (appended or replaced):
        return ManifestUpdate(existing)
    return ManifestUpdate(_rebuilt(existing, replaced, list(appended.values())), len(appended), len(replaced))


def _rebuilt(existing: pa.Table, replaced: dict[int, ManifestRow], appended: list[ManifestRow]) -> pa.Table:
    """``existing`` with the rows at ``replaced``'s positions swapped in place and ``appended`` after them."""
    pieces, start = [], 0
    for position in sorted(replaced):
        pieces += [existing.slice(start, position - start), rows_to_table([replaced[position]])]
        start = position + 1
    pieces += [existing.slice(start), rows_to_table(appended)]
    return pa.concat_tables(piece.cast(SCHEMA) for piece in pieces).combine_chunks()
