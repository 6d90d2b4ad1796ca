"""``msd``: the Million Song Dataset subset (10,000 tracks) captioned from its metadata and Last.fm tags.

Host keys: ``msd`` (origin ``http://labrosa.ee.columbia.edu/~dpwe/tmp``) serves
``millionsongsubset.tar.gz``, one HDF5 file per track (read in :mod:`downloaders.formats.msd`); ``lastfm``
(origin ``http://millionsongdataset.com/sites/default/files/lastfm``) serves the Last.fm dataset.

Last.fm tags (option ``lastfm``): ``zip`` (default) reads the per-track JSON of ``lastfm_subset.zip``, the
Last.fm file made for exactly this subset and small; ``db`` reads ``lastfm_tags.db`` (SQLite, ~650 MB, all
943,347 matched tracks); ``none`` catalogues without tags. The choice is explicit rather than a fallback on
a missing file, so a mirror that lacks one file is an error that names the other option, not a quiet change
of where tags come from. Tags are those with a count of at least ``min_tag_count`` (default 10 of 100).

``catalog`` fetches the subset, extracts only the track files its rows need (the member list is cached
beside the archive, so a re-run does not stream the 1.8 GB archive again) and makes one row per track in
track-id order: a caption from title, artist, year and the strongest tags; ``tags`` the Last.fm tags;
``split`` ``None`` (none is published); ``group`` the song id, since one song can be several tracks.

Audio: MSD never shipped audio, and the 7digital previews it pointed to can no longer be fetched (the API
issues no keys). Option ``audio`` picks a substitute:

* ``folder`` (default): previews you already have, in ``audio_dir``, named ``<track_id>.<ext>`` or by
  7digital id ``<track_7digitalid>.clip.<ext>`` / ``<track_7digitalid>.<ext>`` (flat, or under
  ``A/B/C/`` like the HDF5 files). ``acquire`` copies each into ``raw/msd/audio/`` (a copy already there
  with the preview's bytes is kept, so acquiring again writes nothing); a track without a file is recorded
  as ``no_audio`` (permanent: add the file and re-run with ``--force``).
* ``youtube``: the first result of a YouTube search for ``"<artist> <title>"`` (at
  ``settings.youtube_search_url``, videos only), its first 30 s (the whole video when it is shorter), with
  the same retries and completeness check as every YouTube segment (:mod:`downloaders.transports.youtube`).
  This is a search match, not the original preview: each file's provenance
  (``youtube-search: <query> → <video id>``) is written beside it as ``<track_id>.provenance.json`` and in
  the acquire record's detail, and the row's ``extra.audio_provenance`` says the audio is a search match.
  The row's ``source`` names the search as ``ytsearch1:<query>`` (yt-dlp's notation), whatever the origin.
"""

from __future__ import annotations

import filecmp
import json
import logging
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from downloaders.base import Source, SourceContext, SourceError, record_catalog_outcomes
from downloaders.formats import msd as fmt
from downloaders.transports.archives import Limits, discard_if_broken, extract, list_members
from downloaders.transports.errors import ArchiveError, DownloadError
from downloaders.transports.http import HttpClient, discard
from downloaders.transports.youtube import YouTubeClient
from processors.text import clean_captions
from store.atomic import atomic_path, write_text_atomic
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow
from store.status import FailureClass, StatusRecord

DATASET = "msd"
MSD_ORIGIN = "http://labrosa.ee.columbia.edu/~dpwe/tmp"
LASTFM_ORIGIN = "http://millionsongdataset.com/sites/default/files/lastfm"
SUBSET = "millionsongsubset.tar.gz"
LASTFM_ZIP = "lastfm_subset.zip"
LASTFM_DB = "lastfm_tags.db"
AUDIO_DIR = "audio"
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".m4a", ".webm", ".opus", ".mp4", ".mkv")
"""What a preview or a YouTube download may be; ``audio_path`` looks for them in this order."""
YOUTUBE_SECONDS = 30.0
"""As long as a 7digital preview was."""
DEFAULT_MIN_TAG_COUNT = 10.0
LICENSE = ("MSD and Last.fm dataset terms (research use; UNVERIFIED); the audio belongs to its rights "
           "holders and is not covered by them")
STAGE = "acquire"
REFETCH = f"the extracted file was deleted (each catalog run extracts it again); delete {SUBSET} to download it again"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    audio: str
    audio_dir: Path | None
    lastfm: str
    min_tag_count: float


def _options(ctx: SourceContext) -> Options:
    audio = str(ctx.options.get("audio", "folder")).strip()
    lastfm = str(ctx.options.get("lastfm", "zip")).strip()
    if audio not in ("folder", "youtube"):
        raise SourceError(f"{DATASET}: audio={audio!r}; choose 'folder' (your previews in audio_dir) or "
                          "'youtube' (a search match, not the original preview)")
    if lastfm not in ("zip", "db", "none"):
        raise SourceError(f"{DATASET}: lastfm={lastfm!r}; choose 'zip' ({LASTFM_ZIP}), 'db' ({LASTFM_DB}) "
                          "or 'none'")
    raw_min = ctx.options.get("min_tag_count", DEFAULT_MIN_TAG_COUNT)
    try:
        min_tag_count = float(raw_min)
    except (TypeError, ValueError):
        raise SourceError(f"{DATASET}: min_tag_count={raw_min!r} is not a number; Last.fm counts run "
                          "0-100") from None
    audio_dir = ctx.options.get("audio_dir")
    folder = Path(str(audio_dir)).expanduser().resolve() if audio_dir else None
    if audio == "folder" and (folder is None or not folder.is_dir()):
        raise SourceError(f"{DATASET}: audio=folder needs audio_dir=<folder of your preview files> "
                          f"({'not given' if folder is None else f'{folder} is not a folder'}); MSD has no "
                          "downloadable audio. Or use audio=youtube for search matches.")
    return Options(audio, folder, lastfm, min_tag_count)


def _url(ctx: SourceContext, key: str, origin: str, name: str) -> str:
    return f"{ctx.settings.mirrors.get(key, origin).rstrip('/')}/{name}"


def _fetch(ctx: SourceContext, key: str, origin: str, name: str, hint: str = "") -> Path:
    try:
        target = ctx.root.raw_dir(DATASET) / name
        return HttpClient(ctx.settings).fetch(_url(ctx, key, origin, name), target, description=name)
    except DownloadError as error:
        raise SourceError(f"{DATASET}: could not download {name}: {error.detail}{hint}") from None


def _track_members(archive: Path) -> dict[str, str]:
    """Track id → its ``.h5`` member, cached beside the archive for as long as the archive is unchanged."""
    index = archive.with_name(f".{archive.name}.tracks.json")
    stat = archive.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    try:
        cached = json.loads(index.read_text())
        if cached["archive"] == stamp:
            return dict(cached["tracks"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    tracks: dict[str, str] = {}
    for member in list_members(archive):
        track_id = fmt.track_id_of(member)
        if track_id and member.endswith(".h5"):
            tracks.setdefault(track_id, member)
    write_text_atomic(index, json.dumps({"archive": stamp, "tracks": tracks}))
    return tracks


def _extract_missing(
    archive: Path, members: Mapping[str, str], ctx: SourceContext
) -> dict[str, DownloadError]:
    """Extract the members (track id → member) not yet on disk; returns the refused ones by track id."""
    target = ctx.root.raw_dir(DATASET)
    missing = [member for member in members.values() if not (target / member).is_file()]
    if not missing:
        return {}
    try:
        extract(archive, target, members=missing, limits=Limits.of(ctx.settings))
    except ArchiveError as error:
        return {track: error.refused[member] for track, member in members.items() if member in error.refused}
    except DownloadError as error:
        raise _damaged(archive, error) from None
    return {}


def _damaged(archive: Path, error: DownloadError) -> SourceError:
    discard_if_broken(error, archive)
    return SourceError(f"{DATASET}: {error.detail}")


def _rejected(file: Path, track_id: str, reason: str, detail: str) -> StatusRecord:
    """A track file that cannot be used, deleted so that nothing unusable stays in ``raw/``."""
    file.unlink(missing_ok=True)
    return StatusRecord.failed(make_item_id(DATASET, track_id), "catalog", reason, f"{detail}; {REFETCH}")


def _read_tracks(
    ctx: SourceContext, members: Mapping[str, str]
) -> tuple[list[fmt.Track], list[StatusRecord]]:
    raw = ctx.root.raw_dir(DATASET)
    tracks, rejected = [], []
    for track_id, member in members.items():
        try:
            track = fmt.read_track(raw / member)
        except fmt.TrackFileError as error:
            rejected.append(_rejected(raw / member, track_id, error.reason, f"{member} {error.detail}"))
            continue
        if track.track_id != track_id:
            rejected.append(_rejected(raw / member, track_id, "track_id_mismatch",
                                      f"{member} holds track {track.track_id}, not {track_id}"))
            continue
        tracks.append(track)
    return tracks, rejected


def _lastfm_from_zip(ctx: SourceContext, track_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    archive = _fetch(ctx, "lastfm", LASTFM_ORIGIN, LASTFM_ZIP, " (or set lastfm=db or lastfm=none)")
    raw = ctx.root.raw_dir(DATASET)
    wanted = set(track_ids)
    try:
        listed = list_members(archive)
    except DownloadError as error:
        raise _damaged(archive, error) from None
    members = {track_id: member for member in listed
               if (track_id := fmt.track_id_of(member)) in wanted and member.endswith(".json")}
    for track_id, problem in _extract_missing(archive, members, ctx).items():
        log.warning("%s: no Last.fm tags for %s: %s", DATASET, track_id, problem.detail)
    counts = {}
    for track_id, member in members.items():
        try:
            counts[track_id] = fmt.read_lastfm_json((raw / member).read_bytes())
        except FileNotFoundError:
            continue
        except ValueError as error:
            log.warning("%s: %s in %s is not Last.fm track JSON (%s); the track gets no tags",
                        DATASET, member, LASTFM_ZIP, error)
    return counts


def _lastfm_from_db(ctx: SourceContext, track_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    database = _fetch(ctx, "lastfm", LASTFM_ORIGIN, LASTFM_DB, " (or set lastfm=zip or lastfm=none)")
    try:
        return fmt.read_lastfm_db(database, track_ids)
    except sqlite3.DatabaseError as error:
        discard(database)
        raise SourceError(f"{DATASET}: {database} is not the Last.fm tags database ({error}); it was deleted "
                          "so the next run downloads it again (or set lastfm=zip)") from None


def _lastfm_counts(
    ctx: SourceContext, options: Options, track_ids: Sequence[str]
) -> dict[str, dict[str, float]]:
    if options.lastfm == "zip":
        return _lastfm_from_zip(ctx, track_ids)
    if options.lastfm == "db":
        return _lastfm_from_db(ctx, track_ids)
    return {}


def catalog(ctx: SourceContext) -> Iterator[ManifestRow]:
    options = _options(ctx)
    archive = _fetch(ctx, "msd", MSD_ORIGIN, SUBSET)
    try:
        members = _track_members(archive)
    except DownloadError as error:
        raise _damaged(archive, error) from None
    chosen = {track_id: members[track_id] for track_id in sorted(members)[: ctx.limit]}
    refused = _extract_missing(archive, chosen, ctx)
    tracks, unreadable = _read_tracks(ctx, {t: m for t, m in chosen.items() if t not in refused})
    refusals = [error.record(make_item_id(DATASET, track), "catalog") for track, error in refused.items()]
    # Under the track's item id: one that becomes usable becomes a manifest item, which reports count as
    # catalogued whatever its old record says, so nothing is resolved here.
    record_catalog_outcomes(ctx.root, DATASET, refusals + unreadable)
    counts = _lastfm_counts(ctx, options, [track.track_id for track in tracks])
    for track in tracks:
        yield row_for(track, counts.get(track.track_id), options, chosen[track.track_id])


def _source(track: fmt.Track, options: Options, query: str) -> str:
    """What the audio is: a search (``audio=youtube``), else the 7digital preview the track named."""
    if options.audio == "youtube":
        return search_url(query)
    digital = track.numbers.get("track_7digitalid")
    return f"7digital:{digital}" if digital else f"preview:{track.track_id}"


def _provenance(options: Options, query: str) -> str:
    if options.audio == "youtube":
        return f"youtube-search: {query} (first result; a search match, not the original 7digital preview)"
    return f"local preview folder {options.audio_dir}"


def row_for(
    track: fmt.Track, counts: Mapping[str, float] | None, options: Options, member: str
) -> ManifestRow:
    tags = fmt.tags_over(counts or {}, options.min_tag_count)
    query = fmt.youtube_query(track.artist, track.title)
    extra: dict[str, Any] = {
        "group": track.song_id or track.track_id, "track_id": track.track_id, "song_id": track.song_id,
        "title": track.title, "artist": track.artist, "release": track.release, "year": track.year,
        "track_duration_s": track.duration_s, **track.numbers, **track.ids, "hdf5_member": member,
        "lastfm": None if counts is None else {tag: count for tag, count in counts.items()
                                                if count >= options.min_tag_count},
        "audio_strategy": options.audio, "audio_provenance": _provenance(options, query),
        "search_query": query,
    }
    return ManifestRow(
        item_id=make_item_id(DATASET, track.track_id),
        dataset=DATASET,
        source=_source(track, options, query),
        captions=clean_captions([fmt.caption(track, tags)]),
        tags=tags,
        license=LICENSE,
        extra=ManifestRow.encode_extra(extra),
        group=f"{DATASET}:{track.song_id or track.track_id}",
    )


def _audio_dir(root: DataRoot) -> Path:
    return root.raw_dir(DATASET) / AUDIO_DIR


def _track_id(row: ManifestRow) -> str:
    return row.item_id.split(":", 1)[1]


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    stem = _audio_dir(root) / _track_id(row)
    for suffix in AUDIO_SUFFIXES:
        if stem.with_suffix(suffix).is_file():
            return stem.with_suffix(suffix)
    return stem.with_suffix(AUDIO_SUFFIXES[0])


def preview_names(track_id: str, track_7digitalid: object) -> list[str]:
    """File stems a preview may have: its track id, or its 7digital id as the previews were named."""
    names = [track_id]
    if track_7digitalid:
        names += [f"{track_7digitalid}.clip", str(track_7digitalid)]
    return names


def find_preview(folder: Path, row: ManifestRow) -> Path | None:
    track_id = _track_id(row)
    nested = folder / track_id[2] / track_id[3] / track_id[4]
    for directory in (folder, nested):
        for stem in preview_names(track_id, row.extra_fields.get("track_7digitalid")):
            for suffix in AUDIO_SUFFIXES:
                candidate = directory / f"{stem}{suffix}"
                if candidate.is_file():
                    return candidate
    return None


def _copy_preview(row: ManifestRow, folder: Path, root: DataRoot) -> StatusRecord:
    preview = find_preview(folder, row)
    track_id = _track_id(row)
    extra = row.extra_fields
    if preview is None:
        return StatusRecord.failed(
            row.item_id, STAGE, "no_audio",
            f"no preview for {track_id} ({extra.get('artist')} - {extra.get('title')}) in {folder}; put it "
            f"there as {track_id}.mp3 (or {extra.get('track_7digitalid')}.clip.mp3) and re-run with --force",
        )
    target = _audio_dir(root) / f"{track_id}{preview.suffix.lower()}"
    output = str(target.relative_to(root.path))
    if target.is_file() and filecmp.cmp(preview, target, shallow=False):
        return StatusRecord.ok(row.item_id, STAGE, output=output, detail=f"already copied from {preview}")
    try:
        with atomic_path(target) as temp:
            shutil.copyfile(preview, temp)
    except OSError as error:
        return StatusRecord.failed(row.item_id, STAGE, "copy_failed",
                                   f"could not copy {preview} to {target} ({error.strerror or error}); check "
                                   "permissions and free space", failure_class=FailureClass.TRANSIENT)
    return StatusRecord.ok(row.item_id, STAGE, output=output, detail=f"copied from {preview}")


def search_url(query: str) -> str:
    """The row's name for a search of ``query``: yt-dlp's notation for its first result."""
    return f"ytsearch1:{query}"


def _search_download(row: ManifestRow, client: YouTubeClient, ctx: SourceContext) -> StatusRecord:
    query = str(row.extra_fields.get("search_query") or "")
    if not query:
        return StatusRecord.failed(row.item_id, STAGE, "no_search_query",
                                   f"{_track_id(row)} has neither artist nor title to search YouTube for")
    try:
        video_id = client.search(query)
        if video_id is None:
            return StatusRecord.failed(row.item_id, STAGE, "no_search_result",
                                       f"a YouTube search for {query!r} found nothing")
        path = client.download_segment(video_id, 0.0, YOUTUBE_SECONDS, _audio_dir(ctx.root) / _track_id(row)).path
    except DownloadError as error:
        return error.record(row.item_id, STAGE)
    provenance = f"youtube-search: {query} → {video_id}"
    record = {"track_id": _track_id(row), "query": query, "video_id": video_id, "provenance": provenance,
              "note": "first search result; not the original 7digital preview"}
    sidecar = path.with_name(f"{_track_id(row)}.provenance.json")
    write_text_atomic(sidecar, json.dumps(record, ensure_ascii=False))
    return StatusRecord.ok(row.item_id, STAGE, output=str(path.relative_to(ctx.root.path)), detail=provenance)


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    options = _options(ctx)
    if options.audio == "youtube":
        client = YouTubeClient(ctx.settings)
        for row in rows:
            yield _search_download(row, client, ctx)
        return
    assert options.audio_dir is not None
    for row in rows:
        yield _copy_preview(row, options.audio_dir, ctx.root)


SOURCE = Source(
    name=DATASET,
    description="Million Song Dataset subset (10,000 tracks): captions from title, artist, year and Last.fm "
                "tags; audio from your own preview files or, marked as such, a YouTube search match.",
    needs="HTTP access to host keys 'msd' (labrosa.ee.columbia.edu, ~1.8 GB subset) and 'lastfm' "
          "(millionsongdataset.com); audio: a folder of previews (audio_dir), or yt-dlp and ffmpeg for "
          "audio=youtube",
    catalog=catalog,
    acquire=acquire,
    audio_path=audio_path,
    options={
        "audio": "where audio comes from: 'folder' (default, your previews in audio_dir) or 'youtube' (first "
                 "search result for '<artist> <title>', first 30 s; recorded as a search match)",
        "audio_dir": "folder of preview files named <track_id>.mp3 or <7digital id>.clip.mp3 (audio=folder)",
        "lastfm": "Last.fm tags from 'zip' (default, lastfm_subset.zip JSON), 'db' (lastfm_tags.db) or "
                  "'none'",
        "min_tag_count": "smallest Last.fm tag count (0-100) kept as a tag (default 10)",
    },
)
