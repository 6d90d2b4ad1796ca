"""``fma``: the Free Music Archive dataset: 30 s clips (or whole tracks) of Creative Commons music, by genre.

Everything comes from FMA's object store (host key ``fma``, origin ``https://os.unil.cloud.switch.ch/fma``):
``fma_metadata.zip`` for the catalog and ``fma_<subset>.zip`` for the audio, each checked against the sha1
FMA publishes (release rc1). A mirror that re-packs the zips passes its own sums with the options
``sha1=`` (the audio zip of the chosen subset) and ``metadata_sha1=``. Every zip holds ``<top>/checksums``
(``sha1sum`` format): the catalog checks ``tracks.csv`` and ``genres.csv`` against it, ``acquire`` each mp3.

Subsets nest: ``small`` (8,000 tracks) ⊂ ``medium`` (25,000) ⊂ ``large`` (106,574); ``full`` holds the
large set's tracks untrimmed, so its rows are ``clip_s`` windows over the metadata's duration, or one row
``fma:<track id>`` per whole track when the settings ask for whole tracks (``clip_s = 0`` or ``"fma"`` in
``whole_tracks``). FMA has no captions: ``tags`` are the top genre, the track's genres and their ancestors
(titles from ``genres.csv``), then the free-text tags of the track and its album. ``split`` is FMA's
artist-disjoint split.

Three mp3s of ``fma_small`` hold no audio (an erratum FMA lists: 099134, 108925, 133297); such a file, and
any other that matches its checksum yet holds no audio, is recorded as ``empty_audio`` (permanent).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from downloaders.base import (
    Rejected,
    Source,
    SourceContext,
    SourceError,
    acquire_record,
    naming_override,
    record_catalog_outcomes,
)
from downloaders.formats.fma import (
    SUBSETS,
    FormatError,
    Track,
    audio_member,
    in_subset,
    read_genres,
    read_sha1sums,
    read_tracks,
)
from downloaders.transports.archives import (
    Limits,
    discard_if_broken,
    extract_verified,
    member_mismatch,
    read_member,
)
from downloaders.transports.errors import DownloadError, permanent
from downloaders.transports.http import Checksum, HttpClient
from processors.clip import WHOLE_FILE, catalog_spans
from processors.decode import probe_duration
from processors.errors import AudioError
from processors.text import clean_tags
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow
from store.settings import Settings
from store.status import StatusRecord

DATASET = "fma"
HOST, ORIGIN = "fma", "https://os.unil.cloud.switch.ch/fma"
METADATA = "metadata"
SHA1 = {
    METADATA: "f0df49ffe5f2a6008d7dc83c6915b31835dfe733",
    "small": "ade154f733639d52e35e32f5593efe5be76c6d70",
    "medium": "c67b69ea232021025fca9231fc1c7c1a063ab50b",
    "large": "497109f4dd721066b5ce5e5f250ec604dc78939e",
    "full": "0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab",
}
"""sha1 of each zip as published with release rc1 (2017-05-09), from FMA's README."""
METADATA_FILES = ("tracks.csv", "genres.csv")
CHECKSUMS_MAX_BYTES = 16 << 20
"""``fma_full/checksums`` lists 106,574 files in about 6 MiB."""
KNOWN_NO_AUDIO = frozenset({99134, 108925, 133297})
"""fma_small tracks FMA lists as holding no audio (mdeff/fma#44, #36, #70)."""
DEFAULT_SUBSET = "small"
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Choice:
    subset: str
    sha1: Mapping[str, str]
    """Expected sha1 per zip (``metadata`` and each subset): FMA's, with the user's overrides."""

    def zip_sha1(self, key: str) -> Checksum:
        return Checksum("sha1", self.sha1[key])


def zip_name(key: str) -> str:
    """``fma_metadata.zip``, ``fma_small.zip``, ...: also the name of the zip's top folder plus ``.zip``."""
    return f"fma_{key}.zip"


def choice_of(options: Mapping[str, Any]) -> Choice:
    """The validated options, or a ``SourceError`` that says which values are allowed."""
    subset = str(options.get("subset") or DEFAULT_SUBSET)
    if subset not in SUBSETS:
        raise SourceError(f"{DATASET}: subset={subset!r} is not one of {', '.join(SUBSETS)}")
    sha1 = dict(SHA1)
    for option, key in (("sha1", subset), ("metadata_sha1", METADATA)):
        value = str(options.get(option) or "").strip().lower()
        if value and not _SHA1.match(value):
            raise SourceError(f"{DATASET}: {option}={value!r} is not a sha1 (40 hexadecimal digits)")
        sha1[key] = value or sha1[key]
    return Choice(subset, sha1)


def catalog(ctx: SourceContext) -> list[ManifestRow]:
    choice = choice_of(ctx.options)
    client = HttpClient(ctx.settings)
    try:
        folder = _metadata(ctx, client, choice)
        with (folder / "genres.csv").open(encoding="utf-8", newline="") as handle:
            genres = read_genres(handle)
        with (folder / "tracks.csv").open(encoding="utf-8", newline="") as handle:
            rows, rejected = _rows(read_tracks(handle), genres, choice, ctx)
    except (DownloadError, FormatError, UnicodeDecodeError) as error:
        raise SourceError(f"{DATASET}: cannot read the metadata: {error}") from None
    record_catalog_outcomes(ctx.root, DATASET, rejected)
    return rows


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    return root.raw_dir(DATASET) / row.extra_fields["member"]


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    """Per zip: fetch it (sha1-checked), extract only these rows' mp3s, check each against the zip's
    ``checksums`` and for audio. One record per row, in the order of the zips."""
    choice = choice_of(ctx.options)
    client = HttpClient(ctx.settings)
    by_subset: dict[str, list[ManifestRow]] = {}
    for row in rows:
        by_subset.setdefault(row.extra_fields["archive_subset"], []).append(row)
    for subset, group in by_subset.items():
        yield from _acquire_zip(subset, group, choice, ctx, client)


def _acquire_zip(
    subset: str, rows: list[ManifestRow], choice: Choice, ctx: SourceContext, client: HttpClient
) -> Iterator[StatusRecord]:
    raw = ctx.root.raw_dir(DATASET)
    members = sorted({row.extra_fields["member"] for row in rows})
    try:
        archive = _fetch(ctx, client, subset, choice)
        sums = _zip_checksums(archive, subset)
    except DownloadError as error:
        outcome: dict[str, DownloadError | None] = dict.fromkeys(members, error)
    else:
        outcome = _extract(archive, members, raw, sums, ctx.settings)
        outcome.update({m: _no_audio(raw / m, m) for m, error in outcome.items() if error is None})
    for row in rows:
        yield acquire_record(row, audio_path(row, ctx.root), ctx.root, outcome[row.extra_fields["member"]])


def _extract(
    archive: Path, members: list[str], raw: Path, sums: dict[str, str], settings: Settings
) -> dict[str, DownloadError | None]:
    """Extract the members not yet on disk and verified; each member's outcome (``None`` = verified)."""
    return extract_verified(lambda: archive, raw, members, check=lambda member: _check(raw, member, sums),
                            limits=Limits.of(settings))


def _check(raw: Path, member: str, sums: dict[str, str]) -> DownloadError | None:
    """``None`` when ``member`` is on disk with the bytes the zip's ``checksums`` file lists; else why not."""
    path = raw / member
    if not path.is_file():
        return permanent("missing_member", f"{member} is not in its zip, although tracks.csv lists it")
    expected = sums.get(member.split("/", 1)[1])
    if expected is None:
        return permanent("checksum_unknown", f"{member} is not listed in the zip's checksums file, so it "
                                             "cannot be verified")
    return member_mismatch(path, Checksum("sha1", expected), name=member,
                           listed_in="the zip's checksums file",
                           advice="The zip matched its published sha1: report this to whoever publishes it")


def _no_audio(path: Path, member: str) -> DownloadError | None:
    """Why a verified file is useless (FMA published it without audio), or ``None``."""
    try:
        seconds = probe_duration(path)
    except AudioError as error:
        if error.reason not in ("empty", "undecodable"):
            return None
        problem = error.detail
    else:
        if seconds > 0:
            return None
        problem = f"{path} lasts 0 s"
    track = int(Path(member).stem)
    known = " FMA lists it among the files without audio (mdeff/fma#44)." if track in KNOWN_NO_AUDIO else ""
    return permanent("empty_audio", f"{member} matches its published sha1 but holds no audio ({problem}); "
                                    f"there is nothing to download again.{known}")


def _fetch(ctx: SourceContext, client: HttpClient, key: str, choice: Choice) -> Path:
    name = zip_name(key)
    base = ctx.settings.mirrors.get(HOST, ORIGIN).rstrip("/")
    try:
        return client.fetch(f"{base}/{name}", ctx.root.raw_dir(DATASET) / name, checksum=choice.zip_sha1(key),
                            description=name)
    except DownloadError as error:
        option = "metadata_sha1" if key == METADATA else "sha1"
        raise naming_override(error, option, f"<sha1 of {name}>", when="checksum_mismatch") from None


def _zip_checksums(archive: Path, key: str) -> dict[str, str]:
    """The ``checksums`` file inside ``fma_<key>.zip``: ``path → sha1``, paths relative to its top folder."""
    name = f"fma_{key}/checksums"
    try:
        text = read_member(archive, name, max_bytes=CHECKSUMS_MAX_BYTES).decode("utf-8")
        return read_sha1sums(text, name)
    except DownloadError as error:
        discard_if_broken(error, archive)
        raise
    except (FormatError, UnicodeDecodeError) as error:
        raise permanent("bad_checksums", f"{archive.name}: {name} is unusable ({error}); the zip matched its "
                                         "published sha1, so report this to the mirror's operator") from None


def _metadata(ctx: SourceContext, client: HttpClient, choice: Choice) -> Path:
    """The folder holding ``tracks.csv`` and ``genres.csv``, extracted from the metadata zip and verified."""
    archive = _fetch(ctx, client, METADATA, choice)
    sums = _zip_checksums(archive, METADATA)
    raw = ctx.root.raw_dir(DATASET)
    members = [f"fma_{METADATA}/{name}" for name in METADATA_FILES]
    for error in _extract(archive, members, raw, sums, ctx.settings).values():
        if error is not None:
            raise error
    return raw / f"fma_{METADATA}"


def _rows(
    tracks: Iterator[Track | Rejected], genres: dict[int, str], choice: Choice, ctx: SourceContext
) -> tuple[list[ManifestRow], list[StatusRecord]]:
    """Rows of the chosen subset in file order (at most ``ctx.limit``), and the rejected metadata rows."""
    rows: list[ManifestRow] = []
    rejected: list[StatusRecord] = []
    for entry in tracks:
        if isinstance(entry, Rejected):
            rejected.append(StatusRecord.failed(make_item_id(DATASET, f"tracks.csv#{entry.line}"), "catalog",
                                                entry.reason, entry.detail))
        elif in_subset(entry.subset, choice.subset):
            rows.extend(_track_rows(entry, genres, choice.subset, ctx.settings))
            if ctx.limit is not None and len(rows) >= ctx.limit:
                break
    return list(itertools.islice(rows, ctx.limit)), rejected


def _track_rows(track: Track, genres: dict[int, str], subset: str, settings: Settings) -> list[ManifestRow]:
    """One row per track; a ``full`` track (untrimmed) is one row per window of its stated duration."""
    member = audio_member(subset, track.track_id)
    extra = {
        "group": track.native_id,
        "title": track.title,
        "artist": track.artist,
        "album": track.album,
        "artist_id": track.artist_id,
        "album_id": track.album_id,
        "genre_top": track.genre_top,
        "genre_ids": list(track.genre_ids),
        "subset": track.subset,
        "archive_subset": subset,
        "member": member,
    }
    spans = catalog_spans(DATASET, track.duration_s, settings) if subset == "full" else [WHOLE_FILE]
    titles = (genres[genre] for genre in track.genre_ids if genre in genres)
    tags = clean_tags([track.genre_top, *titles, *track.tags])
    return [
        ManifestRow(
            item_id=make_item_id(DATASET, track.native_id, start),
            dataset=DATASET,
            source=f"{zip_name(subset)}#{member}",
            split=track.split,
            start_s=start,
            end_s=end,
            tags=tags,
            license=track.license,
            extra=ManifestRow.encode_extra(extra),
            group=f"{DATASET}:{track.native_id}",
        )
        for start, end in spans
    ]


SOURCE = Source(
    name=DATASET,
    description="FMA: Creative Commons tracks from the Free Music Archive (30 s clips, or full tracks), "
                "tagged with their genres.",
    needs=f"HTTP access to {ORIGIN} (host key '{HOST}'); disk for the zips (metadata 342 MiB, small 7.2 GiB, "
          "medium 22 GiB, large 93 GiB, full 879 GiB)",
    catalog=catalog,
    acquire=acquire,
    audio_path=audio_path,
    options={
        "subset": f"{', '.join(SUBSETS)} (default {DEFAULT_SUBSET}); each holds the smaller ones; full is "
                  "untrimmed",
        "sha1": "sha1 of fma_<subset>.zip when a mirror re-packs it (default: FMA's published sum)",
        "metadata_sha1": "sha1 of fma_metadata.zip when a mirror re-packs it (default: FMA's published sum)",
    },
)
