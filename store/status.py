"""Per-item outcomes of each stage, one Parquet file per work unit.

A stage asks these records (and its outputs) what is already done before working. Failures carry a
class: ``transient`` ones are retried by the next run, ``permanent`` ones are skipped until forced.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from store.atomic import atomic_path
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


def read_status(directory: Path) -> dict[str, StatusRecord]:
    """The latest record of every item that a stage has seen.

    A damaged unit file is set aside (:mod:`store.quarantine`) and the others are read: its items become
    unseen, so the stage plans them again, and what they produced still counts as done.
    """
    files = sorted(directory.glob("unit-*.parquet")) if directory.exists() else []
    read = functools.partial(read_parquet, schema=SCHEMA)
    tables = [table for table in (skip_damaged(f, read) for f in files) if table is not None]
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    latest: dict[str, StatusRecord] = {}
    for record in table.sort_by("finished_at").to_pylist():
        latest[record["item_id"]] = StatusRecord(**record)
    return latest


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
