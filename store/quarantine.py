"""Damaged state files are moved aside instead of stopping every command that reads them.

A manifest, a status record or a shard that Parquet or HDF5 cannot make sense of (cut short by a full
disk or an interrupted copy, bytes flipped by a failing disk) would otherwise crash ``status``, ``verify``
and every stage with a raw library error. Its reader hands it to :func:`set_aside` instead: the file moves
atomically (one ``rename`` on the root's filesystem) to ``quarantine/<its path under the root>.<UTC time>``,
with a JSON note beside it saying what was wrong and what happens next; one warning line says the same;
and the reader carries on as if the file were absent. Absence is always safe here, because outputs, not
records, say what is done (ARCHITECTURE.md rule 1): the stage that wrote the file plans its items again.
Nothing else is touched, and the damaged bytes stay in ``quarantine/`` until someone deletes them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from store import __version__
from store.atomic import fsync_dir, write_text_atomic
from store.layout import STAGES, DataRoot

log = logging.getLogger(__name__)
T = TypeVar("T")
NOTE_SUFFIX = ".json"


@dataclass(frozen=True)
class Quarantined:
    """One damaged file moved aside; paths are relative to the data root, ``at`` is an ISO time in UTC."""

    original: str
    moved_to: str
    dataset: str
    problem: str
    next_step: str
    at: str

    @property
    def line(self) -> str:
        """The one line a user reads: which file, what was wrong, where it went, what happens next."""
        return f"damaged {self.original} ({self.problem}): moved to {self.moved_to}; {self.next_step}"


class DamagedFileError(ValueError):
    """A file that cannot be read. ``moved``: it is gone from its place (set aside by this process or another),
    so a reader may carry on without it; otherwise it lies outside any data root and was left where it is."""

    def __init__(self, message: str, *, moved: bool) -> None:
        super().__init__(message)
        self.moved = moved


def is_damage(error: BaseException) -> bool:
    """Whether ``error`` says the file's bytes are bad (Parquet or HDF5 could not decode them), not that the
    file could not be reached: a missing file, a refused permission or a failing mount (a subclass such as
    ``FileNotFoundError``, or an errno) is never a reason to move a file."""
    if isinstance(error, OSError):
        return type(error) is OSError and error.errno is None
    return isinstance(error, (pa.ArrowInvalid, pa.ArrowTypeError))


def read_parquet(path: Path, schema: pa.Schema) -> pa.Table:
    """A Parquet file as ``schema`` (a column it lacks, from an older layout, is all nulls), fully validated, so that
    damage shows here (text that is not UTF-8 would otherwise only fail later, half-way through turning rows into
    records). Read with ``ParquetFile``, not ``read_table``: the dataset layer that one loads (and pandas with it)
    costs half a second of a command that only counts."""
    with pq.ParquetFile(path) as parquet:
        return conformed(parquet.read(), schema)


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` as ``schema`` (a column it lacks is all nulls), fully validated: damage shows here."""
    columns = [table.column(field.name).cast(field.type) if field.name in table.column_names
               else pa.nulls(table.num_rows, field.type) for field in schema]
    table = pa.Table.from_arrays(columns, schema=schema)
    table.validate(full=True)
    return table


def guarded(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)``; when the file is damaged, set it aside and raise :class:`DamagedFileError` saying so."""
    try:
        return read(path)
    except Exception as error:
        if not is_damage(error):
            raise
        moved = set_aside(path, error)
        message = moved.line if moved else f"{path} was damaged and another run has just moved it to quarantine"
        raise DamagedFileError(message, moved=True) from None


def skip_damaged(path: Path, read: Callable[[Path], T]) -> T | None:
    """``read(path)``, or ``None`` for a damaged file now set aside: for readers that can do without it."""
    try:
        return guarded(path, read)
    except DamagedFileError as error:
        if not error.moved:
            raise
        return None


def set_aside(path: Path, error: BaseException) -> Quarantined | None:
    """Move the damaged state file ``path`` to the quarantine of its data root, note why, and say so once.

    Returns ``None`` when another process moved it first. Raises :class:`DamagedFileError` (nothing moved)
    when ``path`` is not a manifest, status record or shard under a data root.
    """
    path = path.absolute()
    problem = _describe(error, path)
    found = _locate(path)
    if found is None:
        raise DamagedFileError(f"{path} is damaged ({problem}); it is not under a data root, so it was left in "
                               "place: replace it or move it aside", moved=False) from None
    root, dataset, next_step = found
    relative = path.relative_to(root.path)
    at = datetime.now(UTC)
    target = root.quarantine_dir() / relative.parent / f"{relative.name}.{at:%Y%m%dT%H%M%S%fZ}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    fsync_dir(path.parent)
    fsync_dir(target.parent)
    moved = Quarantined(str(relative), str(target.relative_to(root.path)), dataset, problem, next_step,
                        at.isoformat())
    note = {**asdict(moved), "musictext_version": __version__}
    write_text_atomic(target.with_name(target.name + NOTE_SUFFIX), json.dumps(note, indent=2) + "\n")
    log.warning(moved.line)
    return moved


def quarantined(root: DataRoot, dataset: str | None = None, *, since: datetime | None = None) -> list[Quarantined]:
    """Files set aside under ``root`` (of ``dataset``; at or after ``since``), oldest first, read from their notes.

    A note that is not one of ours (edited by hand, cut short) is passed over: listing never fails.
    """
    directory = root.quarantine_dir()
    names = [f.name for f in fields(Quarantined)]
    found = []
    for path in directory.rglob(f"*{NOTE_SUFFIX}") if directory.is_dir() else []:
        try:
            note = json.loads(path.read_text(encoding="utf-8"))
            moved = Quarantined(**{name: str(note[name]) for name in names})
            at = datetime.fromisoformat(moved.at)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (dataset is None or moved.dataset == dataset) and (since is None or at >= since):
            found.append((at, moved))
    return [moved for _, moved in sorted(found, key=lambda pair: pair[0])]


def _describe(error: BaseException, path: Path) -> str:
    """The library's own words on one line, naming the file by its name only (the line already has its path)."""
    return " ".join(str(error).replace(str(path), path.name).split()) or type(error).__name__


def _locate(path: Path) -> tuple[DataRoot, str, str] | None:
    """The data root holding ``path``, its dataset and what happens next, from where state files live:
    ``manifests/<dataset>.parquet``, ``status/<stage>/<dataset>/`` (embed: ``…/<space>/<model>/``) and
    ``embeddings/<space>/<model>/<dataset>/`` (before spaces: ``embeddings/<model>/<dataset>/``)."""
    for top in path.parents:
        parts = path.relative_to(top).parts
        if top.name == "manifests" and len(parts) == 1 and path.suffix == ".parquet":
            dataset = path.stem
            return DataRoot(top.parent), dataset, (
                f"the next catalog of {dataset} (`musictext ingest {dataset}`, or the pipeline) rebuilds it from "
                "the source; clips, records and shards are kept")
        if top.name == "status" and parts[0] in STAGES and len(parts) == (5 if parts[0] == "embed" else 3):
            stage, dataset = parts[0], parts[1]
            run = f"embed of {dataset} with {parts[3]}" if stage == "embed" else f"{stage} of {dataset}"
            return DataRoot(top.parent), dataset, f"the next {run} plans its items again"
        if top.name == "embeddings" and len(parts) in (3, 4):
            model, dataset = parts[-3], parts[-2]
            return DataRoot(top.parent), dataset, f"the next embed of {dataset} with {model} embeds its rows again"
    return None
