"""The manifest: one Parquet file per dataset, one row per item, rewritten atomically.

A plain schema (no pandas metadata, lists as Arrow lists, source-specific fields as JSON text) so any
Parquet reader can use it without our code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from store.atomic import atomic_path
from store.quarantine import read_parquet, skip_damaged

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
    ]
)


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

    @property
    def extra_fields(self) -> dict[str, Any]:
        return json.loads(self.extra)

    @staticmethod
    def encode_extra(fields: dict[str, Any]) -> str:
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


@dataclass
class ManifestUpdate:
    rows: list[ManifestRow] = field(default_factory=list)
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
    return [
        ManifestRow(**{**record, "captions": tuple(record["captions"] or ()), "tags": tuple(record["tags"] or ())})
        for record in table.select(SCHEMA.names).to_pylist()
    ]


def read_manifest(path: Path) -> list[ManifestRow]:
    """Rows of a manifest, or ``[]`` when the dataset has not been catalogued yet or its manifest was damaged:
    that one is set aside (:mod:`store.quarantine`) and the next catalog rebuilds it from the source."""
    if not path.exists():
        return []
    return skip_damaged(path, lambda p: table_to_rows(read_parquet(p, SCHEMA))) or []


def write_manifest(path: Path, rows: Iterable[ManifestRow]) -> None:
    table = rows_to_table(rows)
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd")


def merge_rows(existing: list[ManifestRow], incoming: Iterable[ManifestRow]) -> ManifestUpdate:
    """New rows are appended and changed rows replaced, in first-seen order; nothing is ever dropped.

    Keeping rows that a source no longer lists is deliberate: their clips and embeddings stay valid.
    """
    by_id = {row.item_id: row for row in existing}
    order = [row.item_id for row in existing]
    update = ManifestUpdate()
    for row in incoming:
        old = by_id.get(row.item_id)
        if old is None:
            order.append(row.item_id)
            update.added += 1
        elif old != row:
            update.changed += 1
        by_id[row.item_id] = row
    update.rows = [by_id[item_id] for item_id in order]
    return update
