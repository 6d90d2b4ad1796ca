"""The source contract: what every dataset module provides, so a new dataset is one new file.

A source module under ``downloaders/`` defines a module-level ``SOURCE = Source(...)``. ``catalog``
turns the published metadata into manifest rows; ``acquire`` fetches (or renders) the audio of a
batch of rows into ``raw/<dataset>/`` and yields one status record per row, never raising for one
bad item. ``audio_path`` says where a row's acquired audio lives, for the preprocess stage.

Every row names its ``group``, the recording its audio comes from, in the namespace every source that publishes
that recording shares (``youtube:<video id>`` for MusicCaps, AudioSet and MusicBench; ``jamendo:<number>`` for
MTG-Jamendo and the Song Describer Dataset; else ``<dataset>:<id>``), and sets ``held_out`` for evaluation audio
its split does not already say is test (MusicBench's train rows cut from MusicCaps' evaluation clips). The
catalog writes splits as ``train``/``val``/``test`` and holds out every test row (:func:`store.manifest.canonical_row`);
training keeps every held-out group, from any catalogued dataset, out of train (:mod:`training.data`).

Below the contract, what the sources share: an acquire record from a row's outcome, and the record of
metadata rows a catalog could not use (:class:`BadRow` raised per row, :class:`Rejected` kept, and
:func:`record_catalog_outcomes` writing them as ``catalog`` status records).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from downloaders.transports.errors import DownloadError
from store import __version__
from store.errors import UserError
from store.layout import DataRoot
from store.manifest import ManifestRow
from store.settings import Settings
from store.status import ItemFailure, StatusRecord, read_status, unit_name, write_status

log = logging.getLogger(__name__)


class SourceError(UserError):
    """A problem with a whole source (bad options, missing metadata) that a user must fix before a run."""


def naming_override(error: DownloadError, option: str, value: str, *, when: str) -> DownloadError:
    """``error`` with the option that pins what a mirror serves instead, when its reason is ``when`` (the mirror
    serves something other than a value the source pins: a checksum, a size, a Hub revision); else ``error``
    itself. Only the user can tell a mirror that re-packs or moves a file on purpose from a broken download."""
    if error.reason != when:
        return error
    return DownloadError(error.reason, f"{error.detail} If this mirror serves another version on purpose, pin it "
                         f"with `-o {option}={value}`.", failure_class=error.failure_class)


@dataclass(frozen=True)
class SourceContext:
    """What a source step may use: the data root, settings and the user's options for this source."""

    root: DataRoot
    settings: Settings
    options: Mapping[str, Any] = field(default_factory=dict)
    limit: int | None = None


def row_range(row: ManifestRow) -> tuple[float | None, float | None]:
    """The default clip range: the row's own start and end within the acquired file."""
    return row.start_s, row.end_s


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    needs: str
    catalog: Callable[[SourceContext], Iterable[ManifestRow]]
    acquire: Callable[[Sequence[ManifestRow], SourceContext], Iterator[StatusRecord]]
    audio_path: Callable[[ManifestRow, DataRoot], Path]
    options: Mapping[str, str] = field(default_factory=dict)
    """Option name → one-line help, as shown by ``musictext datasets``."""
    clip_range: Callable[[ManifestRow], tuple[float | None, float | None]] = row_range
    tag_families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Single-label tag families (e.g. genre), each item carrying exactly one tag of a family; zero-shot
    evaluation scores them as classification with a confusion matrix."""
    """The range to clip *within the acquired file*. Sources that download only the segment (YouTube) return
    ``(None, None)``: their file already is the segment, while the row's start/end keep where it came from."""

    def check_options(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise SourceError(f"{self.name}: unknown option(s) {', '.join(unknown)}; this source takes: {known}")


def acquire_record(row: ManifestRow, path: Path, root: DataRoot, failure: ItemFailure | None) -> StatusRecord:
    """``row``'s acquire record: ``failure``'s, else ok with its audio at ``path`` and, for a row that is a
    window of the file, the window's length as the duration that reports count hours from."""
    if failure is not None:
        return failure.record(row.item_id, "acquire")
    start, end = row.start_s, row.end_s
    duration = end - start if start is not None and end is not None else None
    output = str(path.relative_to(root.path))
    return StatusRecord.ok(row.item_id, "acquire", output=output, duration_s=duration)


class BadRow(ItemFailure):
    """One metadata row a parser cannot use, raised while reading that row and caught by the loop over the
    rows: the row becomes a :class:`Rejected` and the rest of the file is still read."""


@dataclass(frozen=True)
class Rejected:
    """A metadata row left out of a catalog: the line it starts on, a reason label and the sentence a user
    reads, which names the file and the line."""

    line: int
    reason: str
    detail: str

    @classmethod
    def at(cls, file_name: str, line: int, problem: ItemFailure) -> Rejected:
        return cls(line, problem.reason, f"{file_name} line {line}: {problem.detail}")


def record_catalog_outcomes(
    root: DataRoot, dataset: str, failures: Sequence[StatusRecord], *,
    resolved: Callable[[str], bool] | None = None,
) -> None:
    """Record the metadata rows a catalog could not use (``failures``, failed ``catalog`` records) and, as ok
    records, the ids an earlier run rejected that this one did not and that ``resolved`` vouches for.

    Only what is new or changed since the last run is written, so a re-run over the same metadata writes
    nothing. Whether an id that is no longer rejected is fine is each source's own rule (``resolved``): only
    it knows which ids the metadata it read this time covers; absent from a file this run never read (or
    read only in part, under a limit) is not the same as fixed.
    """
    directory = root.status_dir("catalog", dataset)
    seen = read_status(directory)
    rejected = {record.item_id for record in failures}
    changed = [record for record in failures if _differs(seen.get(record.item_id), record)]
    cleared = [
        StatusRecord.ok(item_id, "catalog", detail="this metadata row is no longer rejected")
        for item_id, record in seen.items()
        if not record.is_ok and item_id not in rejected and resolved is not None and resolved(item_id)
    ]
    if failures:
        log.warning("%s: %d metadata row(s) unusable, e.g. %s; all are recorded in %s",
                    dataset, len(failures), failures[0].detail, directory)
    records = changed + cleared
    if records:
        write_status(directory, unit_name(record.item_id for record in records), records, __version__)


def _differs(old: StatusRecord | None, new: StatusRecord) -> bool:
    return old is None or (old.outcome, old.reason, old.detail) != (new.outcome, new.reason, new.detail)
