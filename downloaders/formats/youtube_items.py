"""Items whose audio is one segment of a YouTube video (MusicCaps, AudioSet): their manifest rows, the record
of metadata rows a catalog left out, and the acquire step that downloads just the segment.

The transport downloads only ``[start_s, end_s]`` of the video, so the acquired file already *is* the
segment: the row keeps ``start_s``/``end_s`` as where in the video it came from (``extra`` says
``"segment_downloaded": true``), and :func:`clip_range` tells preprocessing to take the whole file instead
of seeking ``start_s`` into a file that is only ``end_s - start_s`` long.

Segments land in ``raw/<dataset>/<item key>.<ext>``, the extension being the container YouTube served
(WebM/Opus or M4A/AAC, usually). A segment counts as acquired only when its decoded length is the row's span
to within :data:`~verification.audio.DURATION_TOLERANCE_S` (what ``verify`` later checks the clip against):
a file already there is re-checked before it is called "already downloaded", and one that is short (a
download cut off by an older version, or damaged since) is deleted and downloaded again. The transport
retries faults at once (see :mod:`downloaders.transports.youtube`); what still fails is transient and
retried by the next run. Permanent failures (private, removed, terminated, ...) are recorded with their
class, so the flows skip them on later runs unless forced; among them ``video_shorter``: the video, as
YouTube states its length, ends before the row's segment does, so the segment cannot be what the row
describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from downloaders.base import SourceContext, record_catalog_outcomes
from downloaders.formats.segments import Rejected, Segment
from downloaders.transports import youtube
from downloaders.transports.errors import DownloadError, permanent
from downloaders.transports.youtube import YouTubeClient
from processors.errors import AudioError
from store.layout import DataRoot, item_key, make_item_id
from store.manifest import ManifestRow
from store.status import StatusRecord
from verification.audio import DURATION_TOLERANCE_S

STAGE = "acquire"
CONTAINERS = (".webm", ".m4a", ".opus", ".ogg", ".mp4", ".mka", ".mkv", ".mp3", ".aac", ".wav", ".flac")
"""Extensions a downloaded segment may have, most likely first; ``audio_path`` looks for them in turn."""


def segment_row(dataset: str, segment: Segment, *, split: str | None, captions: tuple[str, ...],
                tags: tuple[str, ...], license: str, extra: dict[str, Any]) -> ManifestRow:
    """The manifest row of one segment: ``source`` is the video id, ``group`` the video, in the namespace every
    YouTube-cut dataset shares (MusicCaps, AudioSet and MusicBench cut clips from the same videos)."""
    return ManifestRow(
        item_id=make_item_id(dataset, segment.ytid, segment.start_s),
        dataset=dataset,
        source=segment.ytid,
        split=split,
        start_s=segment.start_s,
        end_s=segment.end_s,
        captions=captions,
        tags=tags,
        license=license,
        extra=ManifestRow.encode_extra({**extra, "group": segment.ytid, "segment_downloaded": True}),
        group=youtube_group(segment.ytid),
    )


def youtube_group(ytid: str) -> str:
    return f"youtube:{ytid}"


def clip_range(row: ManifestRow) -> tuple[float | None, float | None]:
    """The whole acquired file: it holds only the segment (see the module docstring)."""
    return None, None


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    """The downloaded segment, whatever its container; the most likely name when it is not there yet."""
    stem = root.raw_dir(row.dataset) / item_key(row.item_id)
    candidates = [stem.with_name(stem.name + suffix) for suffix in CONTAINERS]
    return next((path for path in candidates if path.is_file()), candidates[0])


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    """Download each row's segment, ``youtube_workers`` at a time; one record per row, in row order."""
    client = YouTubeClient(ctx.settings)
    with ThreadPoolExecutor(max_workers=ctx.settings.youtube_workers, thread_name_prefix="youtube") as pool:
        yield from pool.map(lambda row: _acquire_one(client, row, ctx.root), rows)


def _acquire_one(client: YouTubeClient, row: ManifestRow, root: DataRoot) -> StatusRecord:
    existing = audio_path(row, root)
    if existing.is_file():
        if _matches_row(existing, row):
            return StatusRecord.ok(row.item_id, STAGE, output=_relative(existing, root),
                                   detail="already downloaded")
        youtube.discard(existing)
    try:
        segment = client.download_segment(row.source, row.start_s, row.end_s,
                                          root.raw_dir(row.dataset) / item_key(row.item_id))
        if segment.duration_s < span(row) - DURATION_TOLERANCE_S:
            youtube.discard(segment.path)
            raise _video_shorter(row, segment)
    except DownloadError as error:
        return error.record(row.item_id, STAGE)
    return StatusRecord.ok(row.item_id, STAGE, output=_relative(segment.path, root))


def span(row: ManifestRow) -> float:
    """How long the row's segment lasts: what its downloaded file, and the clip made of it, must last."""
    return row.end_s - row.start_s


def _matches_row(path: Path, row: ManifestRow) -> bool:
    try:
        return abs(youtube.segment_seconds(path) - span(row)) <= DURATION_TOLERANCE_S
    except AudioError:
        return False


def _video_shorter(row: ManifestRow, segment: youtube.Segment) -> DownloadError:
    """The transport accepts a segment cut short only by the video's stated end; the row says it is longer."""
    return permanent("video_shorter", f"YouTube video {row.source} ends at {segment.video_s} s (as YouTube "
                     f"states it), so its segment {row.start_s:g}–{row.end_s:g} s holds {segment.duration_s:.2f} "
                     f"s, not the {span(row):g} s the row describes; skipped until forced.")


def _relative(path: Path, root: DataRoot) -> str:
    return path.relative_to(root.path).as_posix()


def record_rejections(root: DataRoot, dataset: str, rejections: Iterable[Rejected], *, file_name: str,
                      accepted: Iterable[str]) -> None:
    """Record the metadata rows a catalog left out, as failed ``catalog`` records, and rows it now accepts
    that an earlier run rejected, as ok ones; only what changed since the last run is written.

    A rejected row is recorded under its item's id when its video id and start could be read (so the
    report shows the item as failed), else under ``<dataset>:<file>#<line>``.
    """
    failures = [
        StatusRecord.failed(_rejected_id(dataset, file_name, row), "catalog", row.reason,
                            f"{file_name} line {row.line}: {row.detail}")
        for row in rejections
    ]
    record_catalog_outcomes(root, dataset, failures, resolved=frozenset(accepted).__contains__)


def _rejected_id(dataset: str, file_name: str, row: Rejected) -> str:
    if row.ytid is not None:
        return make_item_id(dataset, row.ytid, row.start_s)
    return make_item_id(dataset, f"{file_name}#{row.line}")
