"""``song_describer``: the Song Describer Dataset (SDD), crowd-sourced captions of two-minute excerpts of
MTG-Jamendo tracks, published for evaluation only.

Everything comes from Zenodo record 10072001 (host key ``zenodo``, origin ``https://zenodo.org``): the record's
JSON (``/api/records/10072001``) gives each file's size and md5, then ``song_describer.csv``,
``audio_licenses.txt`` and ``audio.zip`` are fetched from the API's file links
(``/api/records/10072001/files/<key>/content``) and checked against them. The links are built on the mirror
setting rather than read from the JSON, so a lab mirror may serve a saved copy of the record whose links still
name zenodo.org. Everything lands under ``raw/song_describer/`` by its key; members under ``audio/``.

One item per track, with all of its captions (ordered by caption id); ``extra`` keeps the aligned
``caption_ids``, ``is_valid_subset`` and ``familiarity`` lists, the track's ``artist_id``, ``album_id`` and
``duration`` (the whole track's, from MTG-Jamendo), the ``subset`` chosen and the track's ``member`` of the
zip. ``-o subset=valid`` keeps only the validated captions, and only the tracks that have one. Every item is
``test`` (the dataset has a single split, meant for evaluation) and its group is the MTG-Jamendo recording's
(``jamendo:<track id>``), so training keeps the track's MTG-Jamendo twin out of train. ``license`` is the
track's own Creative Commons licence from ``audio_licenses.txt`` when its block there can be read, else the
dataset's general statement.

Items are whole files by default (``-o spans=whole``): the audio is already one two-minute excerpt per track,
and Navidrome embeds whole tracks. ``-o spans=windows`` gives ``clip_s`` windows over the excerpt (its length
taken as the track's duration, at most two minutes), unless the settings ask for whole tracks of this dataset
(``clip_s = 0``, ``whole_tracks``), which win as for every source.

``acquire`` downloads ``audio.zip`` (3.3 GB, resumed with range requests after a dropped connection, md5-checked
before it takes its name) once, only when a row's track is not on disk yet, extracts only the rows' members
(each checked against the zip's CRC-32 as it is read, written through a temporary name) and checks that each
reads as audio. A re-run whose tracks are all on disk makes no request.

UNVERIFIED against the real record (no network where this was written): the record JSON's exact fields (taken
from third-party scripts that read ``files[].key/size/checksum/links.self`` of this very record),
how ``audio.zip`` was packed (deflate, with folder entries, is assumed; the reader takes any method zip
allows), the lines of ``audio_licenses.txt`` (see :mod:`downloaders.formats.song_describer`), and the sizes and
md5s themselves, which are read from the record at run time and never pinned here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from downloaders.base import Rejected, Source, SourceContext, SourceError, acquire_record, record_catalog_outcomes
from downloaders.formats import FormatError
from downloaders.formats.mtg_jamendo import jamendo_group
from downloaders.formats.song_describer import RecordFile, Track, read_licenses, read_record, read_tracks
from downloaders.transports.archives import Limits, extract_verified
from downloaders.transports.errors import DownloadError, permanent
from downloaders.transports.http import Checksum, HttpClient, discard
from processors.clip import WHOLE_FILE, Span, catalog_spans
from processors.decode import probe_duration
from processors.errors import AudioError
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow
from store.settings import Settings
from store.status import FailureClass, StatusRecord

DATASET = "song_describer"
HOST, ORIGIN = "zenodo", "https://zenodo.org"
RECORD = "10072001"
CSV, LICENSES, AUDIO_ZIP = "song_describer.csv", "audio_licenses.txt", "audio.zip"
RECORD_FILE = f"zenodo-record-{RECORD}.json"
RECORD_MAX_BYTES = 1 << 20
"""The record's JSON is a few kB; anything far bigger is not the answer we asked for."""
METADATA_MAX_BYTES = 16 << 20
"""The caption table is about 0.3 MB."""
EXCERPT_S = 120.0
"""The published audio is each track's first two minutes (or the whole track when it is shorter)."""
LICENSE = "Creative Commons per track (audio_licenses.txt of Zenodo record 10072001)"
CAPTIONS_LICENSE = "captions CC BY-SA 4.0"
SUBSETS = ("full", "valid")
SPANS = ("whole", "windows")
SPLIT = "test"
NOT_AUDIO = frozenset({"empty", "undecodable"})
"""What the decoder says of a file that holds no audio at all."""


@dataclass(frozen=True)
class Choice:
    subset: str
    spans: str


def choice_of(options: Mapping[str, Any]) -> Choice:
    """The validated options, or a ``SourceError`` that says which values are allowed."""
    subset = str(options.get("subset") or SUBSETS[0])
    spans = str(options.get("spans") or SPANS[0])
    if subset not in SUBSETS:
        raise SourceError(f"{DATASET}: subset={subset!r} is not one of {', '.join(SUBSETS)}")
    if spans not in SPANS:
        raise SourceError(f"{DATASET}: spans={spans!r} is not one of {', '.join(SPANS)}")
    return Choice(subset, spans)


def catalog(ctx: SourceContext) -> Iterator[ManifestRow]:
    choice = choice_of(ctx.options)
    client = HttpClient(ctx.settings)
    try:
        files = _record(ctx, client)
        tracks, rejected = read_tracks(_fetch(ctx, client, files, CSV).read_bytes(), CSV)
        licenses = read_licenses(_fetch(ctx, client, files, LICENSES).read_bytes())
    except (DownloadError, FormatError) as error:
        raise SourceError(f"{DATASET}: cannot read the metadata: {error}") from None
    record_catalog_outcomes(ctx.root, DATASET, [_rejection(r) for r in rejected], resolved=lambda _: True)
    if choice.subset == "valid":
        tracks = [track.validated() for track in tracks]
    rows = (row for track in tracks if track.captions
            for row in _rows(track, choice, licenses.get(track.track_id, LICENSE), ctx.settings))
    yield from itertools.islice(rows, ctx.limit)


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    return root.raw_dir(DATASET) / row.extra_fields["member"]


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    """Extract the rows' tracks from ``audio.zip`` (downloaded only when one is missing); one record per row."""
    client = HttpClient(ctx.settings)
    raw = ctx.root.raw_dir(DATASET)
    members = sorted({row.extra_fields["member"] for row in rows})
    outcome = extract_verified(lambda: _fetch(ctx, client, _record(ctx, client), AUDIO_ZIP), raw, members,
                               check=lambda member: _check(raw / member, member), limits=Limits.of(ctx.settings))
    for row in rows:
        yield acquire_record(row, audio_path(row, ctx.root), ctx.root, outcome[row.extra_fields["member"]])


def _record(ctx: SourceContext, client: HttpClient) -> dict[str, RecordFile]:
    """The record's files, from its JSON fetched once into ``raw/song_describer/``. JSON that is not the record
    (an error page, a login wall) is deleted, so the next run asks again."""
    base = ctx.settings.mirrors.get(HOST, ORIGIN).rstrip("/")
    target = ctx.root.raw_dir(DATASET) / RECORD_FILE
    path = client.fetch(f"{base}/api/records/{RECORD}", target, max_bytes=RECORD_MAX_BYTES,
                        description=f"Zenodo record {RECORD}")
    try:
        return read_record(path.read_bytes(), RECORD)
    except FormatError as error:
        discard(path)
        raise DownloadError("bad_record", f"{error}; it was deleted and is fetched again next run. If this "
                            f"repeats, check the '{HOST}' mirror setting.") from None


def _fetch(ctx: SourceContext, client: HttpClient, files: Mapping[str, RecordFile], key: str) -> Path:
    """``key`` of the record, downloaded into ``raw/song_describer/`` and checked against the record's size
    and md5."""
    listed = files.get(key)
    if listed is None:
        raise permanent("not_in_record", f"Zenodo record {RECORD} lists no file {key!r} (it lists "
                        f"{', '.join(sorted(files))}); check the '{HOST}' mirror setting")
    base = ctx.settings.mirrors.get(HOST, ORIGIN).rstrip("/")
    limit = None if key == AUDIO_ZIP else METADATA_MAX_BYTES
    return client.fetch(f"{base}/api/records/{RECORD}/files/{key}/content", ctx.root.raw_dir(DATASET) / key,
                        checksum=Checksum("md5", listed.md5), size=listed.size, max_bytes=limit, description=key)


def _check(path: Path, member: str) -> DownloadError | None:
    """``None`` when the extracted ``member`` is there and holds audio. A member that holds none is deleted:
    its zip matched Zenodo's md5, so extracting it again cannot help."""
    if not path.is_file():
        return permanent("missing_member", f"{member} is not in {AUDIO_ZIP}, although {CSV} lists its track")
    try:
        probe_duration(path)
    except AudioError as error:
        if error.reason in NOT_AUDIO:
            path.unlink(missing_ok=True)
            return permanent("bad_audio", f"{member} in {AUDIO_ZIP} holds no audio ({error.detail}); the zip "
                             "matched Zenodo's md5, so the published file itself is broken and was deleted. "
                             "Nothing to download again; report it to the dataset's authors.")
        if error.failure_class == FailureClass.TRANSIENT:
            return DownloadError(error.reason, error.detail)
    return None


def _rows(track: Track, choice: Choice, audio_license: str, settings: Settings) -> Iterator[ManifestRow]:
    captions = track.captions
    extra = {
        "caption_ids": [caption.caption_id for caption in captions],
        "is_valid_subset": [caption.valid for caption in captions],
        "familiarity": [caption.familiarity for caption in captions],
        "artist_id": track.artist_id,
        "album_id": track.album_id,
        "duration": track.duration_s,
        "subset": choice.subset,
        "member": track.member,
    }
    for start, end in _spans(track, choice, settings):
        yield ManifestRow(
            item_id=make_item_id(DATASET, str(track.track_id), start),
            dataset=DATASET,
            source=f"{AUDIO_ZIP}#{track.member}",
            split=SPLIT,
            start_s=start,
            end_s=end,
            captions=tuple(caption.text for caption in captions),
            license=f"{audio_license}; {CAPTIONS_LICENSE}",
            extra=ManifestRow.encode_extra(extra),
            group=jamendo_group(track.track_id),
        )


def _spans(track: Track, choice: Choice, settings: Settings) -> list[Span]:
    """The whole excerpt, or windows over it when asked for (see the module docstring)."""
    if choice.spans == "whole":
        return [WHOLE_FILE]
    return catalog_spans(DATASET, min(track.duration_s, EXCERPT_S), settings)


def _rejection(rejected: Rejected) -> StatusRecord:
    return StatusRecord.failed(make_item_id(DATASET, f"{CSV}#{rejected.line}"), "catalog", rejected.reason,
                               rejected.detail)


SOURCE = Source(
    name=DATASET,
    description="Song Describer Dataset: 1,106 crowd-sourced captions of 706 two-minute excerpts of "
                "MTG-Jamendo tracks, an evaluation set (every item is test and held out).",
    needs=f"HTTP access to {ORIGIN} (host key '{HOST}'); disk for {AUDIO_ZIP} (3.3 GB, downloaded whole "
          "once) and the extracted MP3s (as much again)",
    catalog=catalog,
    acquire=acquire,
    audio_path=audio_path,
    options={
        "subset": "full (1,106 captions of 706 tracks; default) or valid (the 746 validated captions, of "
                  "546 tracks)",
        "spans": "whole (default: one item per two-minute excerpt, as Navidrome embeds a track) or windows "
                 "(clip_s windows over it, unless clip_s = 0 or whole_tracks asks for whole tracks)",
    },
)
