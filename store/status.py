"""Per-item outcomes of each stage: one Parquet file per work unit, folded into a compacted index.

A stage asks these records (and its outputs) what is already done before working. Failures carry a
class: ``transient`` ones are retried by the next run, ``permanent`` ones are skipped until forced.

Workers write one ``unit-*.parquet`` per unit, never touching another's file, so any number can write at once
(threads, processes, Dask workers on other hosts). A run folds them into ``compacted-<time>.parquet`` (the latest
record of every item, and the names of the unit files it covers) once enough have piled up, so planning reads
one index and a few unit files instead of one file per 100 items. The previous index stays as a fallback
until the next compaction: a damaged newest index is set aside and the one before it, with the unit files it
did not cover (all still on disk), gives the same records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.atomic import atomic_path, locked
from store.quarantine import read_parquet, skip_damaged


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"


class FailureClass(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("failure_class", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("output", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("code_version", pa.string()),
    ]
)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StatusRecord:
    """What happened to one item in one stage. ``reason`` is a short stable label (for grouping);
    ``detail`` is the sentence a user reads to act on it; ``duration_s`` is the audio's length in seconds
    (for hours in reports), not the time the work took."""

    item_id: str
    stage: str
    outcome: str
    failure_class: str | None = None
    reason: str | None = None
    detail: str | None = None
    output: str | None = None
    duration_s: float | None = None
    finished_at: datetime = field(default_factory=_now)
    code_version: str | None = None

    @classmethod
    def ok(cls, item_id: str, stage: str, *, output: str | None = None,
           duration_s: float | None = None, detail: str | None = None) -> StatusRecord:
        return cls(item_id, stage, Outcome.OK, output=output, duration_s=duration_s, detail=detail)

    @classmethod
    def failed(cls, item_id: str, stage: str, reason: str, detail: str, *,
               failure_class: FailureClass = FailureClass.PERMANENT) -> StatusRecord:
        return cls(item_id, stage, Outcome.FAILED, failure_class=failure_class, reason=reason, detail=detail)

    @property
    def is_ok(self) -> bool:
        return self.outcome == Outcome.OK

    @property
    def is_permanent_failure(self) -> bool:
        return self.outcome == Outcome.FAILED and self.failure_class == FailureClass.PERMANENT


def unit_name(item_ids: Iterable[str]) -> str:
    """A unit file name that is the same whenever the same items are worked together."""
    digest = hashlib.sha1("\n".join(sorted(item_ids)).encode()).hexdigest()[:16]
    return f"unit-{digest}"


def write_status(directory: Path, unit: str, records: list[StatusRecord], code_version: str) -> Path:
    """Write one unit's records atomically; a re-run of the same unit adds a newer file beside it."""
    stamped = [{**asdict(r), "code_version": code_version} for r in records]
    table = pa.Table.from_pylist(stamped, schema=SCHEMA)
    target = directory / f"{unit}-{_now():%Y%m%dT%H%M%S%f}.parquet"
    with atomic_path(target) as temp:
        pq.write_table(table, temp)
    return target


UNIT_PREFIX = "unit-"
INDEX_PREFIX = "compacted-"
COVERS_KEY = b"musictext.covers"
COMPACT_AFTER = 64
"""Unit files left outside the index before a run folds them in: planning reads at most about this many small
files beside the index, and a compaction (which rewrites the index) happens once per this many units."""
READ_ATTEMPTS = 5


@dataclass(frozen=True)
class _Index:
    """A compacted index: the latest record of every item of the unit files it ``covers`` (their names)."""

    table: pa.Table
    covers: frozenset[str]


def _read_index(path: Path) -> _Index:
    covers = json.loads((pq.read_schema(path).metadata or {}).get(COVERS_KEY, b"[]"))
    return _Index(read_parquet(path, SCHEMA), frozenset(covers))


def _newest_index(directory: Path, names: list[str]) -> tuple[str | None, _Index | None]:
    """The newest index that reads, setting damaged ones aside (:mod:`store.quarantine`) and falling back."""
    for name in sorted((n for n in names if n.startswith(INDEX_PREFIX)), reverse=True):
        index = skip_damaged(directory / name, _read_index)
        if index is not None:
            return name, index
    return None, None


def _listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def _latest(table: pa.Table) -> pa.Table:
    """One row per item: its newest by ``finished_at``, the later-read row on a tie (rows come oldest file first)."""
    if table.num_rows == 0:
        return table
    order = table.append_column("_order", pa.array(np.arange(table.num_rows)))
    ranked = order.sort_by([("item_id", "ascending"), ("finished_at", "ascending"), ("_order", "ascending")])
    ids = ranked.column("item_id").combine_chunks()
    last = pc.not_equal(ids.slice(0, len(ids) - 1), ids.slice(1)).to_numpy(zero_copy_only=False)
    return ranked.filter(pa.array(np.append(last, True))).drop_columns(["_order"])


@dataclass(frozen=True)
class _Folder:
    """One listing of a status folder: its newest readable index and the unit files that index does not cover."""

    directory: Path
    names: list[str]
    index_name: str | None
    index: _Index | None

    @classmethod
    def listed(cls, directory: Path) -> _Folder:
        names = _listing(directory)
        return cls(directory, names, *_newest_index(directory, names))

    @property
    def covered(self) -> frozenset[str]:
        return self.index.covers if self.index else frozenset()

    @property
    def units(self) -> list[str]:
        return [n for n in self.names if n.startswith(UNIT_PREFIX) and n.endswith(".parquet") and n not in self.covered]

    def tables(self) -> list[pa.Table]:
        """The index's table and each readable uncovered unit file's (a damaged one is set aside)."""
        units = (skip_damaged(self.directory / name, lambda path: read_parquet(path, SCHEMA)) for name in self.units)
        return ([self.index.table] if self.index else []) + [table for table in units if table is not None]


def _read_once(directory: Path) -> pa.Table:
    folder = _Folder.listed(directory)
    if folder.index and not folder.units:  # a compacted folder: the index holds one latest row per item already
        return folder.index.table
    tables = folder.tables()
    return _latest(pa.concat_tables(tables)) if tables else SCHEMA.empty_table()


def read_status_table(directory: Path) -> pa.Table:
    """The latest record of every item a stage has seen, as an Arrow table (one row per item).

    A damaged unit file is set aside (:mod:`store.quarantine`) and the others are read: its items become
    unseen, so the stage plans them again, and what they produced still counts as done. A file that a
    concurrent compaction removed between listing and reading makes the read start over (the index that
    replaced it holds its records).
    """
    for _ in range(READ_ATTEMPTS - 1):
        try:
            return _read_once(directory)
        except FileNotFoundError:
            continue
    return _read_once(directory)


def read_status(directory: Path) -> dict[str, StatusRecord]:
    """:func:`read_status_table` as records by item id, for callers that need whole records of few items."""
    return {record["item_id"]: StatusRecord(**record) for record in read_status_table(directory).to_pylist()}


@dataclass(frozen=True)
class Seen:
    """What planning needs of a stage's records, without a Python object per record: the ids whose latest record
    is ok, those that failed permanently, and when each ok record was written (microseconds since the epoch)."""

    ok: set[str]
    permanent: set[str]
    ok_at_us: dict[str, int]


def seen(directory: Path, *, with_times: bool = False) -> Seen:
    """The :class:`Seen` of ``directory``; ``with_times`` adds the ok records' times (verify compares them with
    clips')."""
    table = read_status_table(directory)
    is_ok = pc.equal(table.column("outcome"), Outcome.OK.value)
    ok = table.filter(is_ok)
    permanent = table.filter(pc.and_(pc.invert(is_ok),
                                     pc.equal(table.column("failure_class"), FailureClass.PERMANENT.value)))
    ok_ids = ok.column("item_id").to_pylist()
    times = ok.column("finished_at").cast(pa.int64()).to_pylist() if with_times else []
    return Seen(set(ok_ids), set(permanent.column("item_id").to_pylist()), dict(zip(ok_ids, times, strict=False)))


def failures(directory: Path) -> tuple[dict[str, StatusRecord], set[str]]:
    """The latest failed records by item id, as whole records, and the ids whose latest record is ok: what a
    report needs, with a Python object for failures only (they are few; ok records are most of a corpus)."""
    table = read_status_table(directory)
    is_ok = pc.equal(table.column("outcome"), Outcome.OK.value)
    failed = {r["item_id"]: StatusRecord(**r) for r in table.filter(pc.invert(is_ok)).to_pylist()}
    return failed, set(table.filter(is_ok).column("item_id").to_pylist())


def compact(directory: Path, *, after: int = COMPACT_AFTER) -> Path | None:
    """Fold the unit files outside the newest index into a new one when there are at least ``after`` of them.

    Safe beside writers (they only add unit files; one written meanwhile is simply left for the next
    compaction) and readers (:func:`read_status_table` starts over when a file it listed is gone), and under
    SIGKILL at any point: the new index appears by rename, and only files that two indexes cover are deleted,
    after it exists. Compactions of one directory take turns on a lock file beside the records.
    """
    if not directory.is_dir():
        return None
    with locked(directory / "compaction"):
        folder = _Folder.listed(directory)
        if len(folder.units) < after:
            return None
        covers = sorted(folder.covered | set(folder.units))
        table = _latest(pa.concat_tables(folder.tables()))
        table = table.replace_schema_metadata({COVERS_KEY: json.dumps(covers).encode()})
        target = directory / f"{INDEX_PREFIX}{_now():%Y%m%dT%H%M%S%f}.parquet"
        with atomic_path(target) as temp:
            pq.write_table(table, temp, compression="zstd")
        for name in folder.covered:  # now in two indexes: the previous one (kept as the fallback) and the new one
            (directory / name).unlink(missing_ok=True)
        for name in folder.names:
            if name.startswith(INDEX_PREFIX) and name != folder.index_name:
                (directory / name).unlink(missing_ok=True)
        return target


class ItemFailure(Exception):
    """A failure of one item that becomes its status record: the base of every stage's own error.

    ``reason`` is a stable snake_case label (grouped in reports); ``detail`` the sentence a user reads;
    ``failure_class`` whether the next run tries again. Subclasses pick the default class that fits them.
    """

    default_class = FailureClass.PERMANENT

    def __init__(self, reason: str, detail: str, *, failure_class: FailureClass | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.failure_class = failure_class or self.default_class

    @property
    def permanent(self) -> bool:
        return self.failure_class == FailureClass.PERMANENT

    def record(self, item_id: str, stage: str) -> StatusRecord:
        """This failure as the status record of ``item_id`` in ``stage``."""
        return StatusRecord.failed(item_id, stage, self.reason, self.detail, failure_class=self.failure_class)

    def __repr__(self) -> str:
        kind = self.failure_class.value
        return f"{type(self).__name__}({self.reason!r}, {self.detail!r}, failure_class={kind!r})"
