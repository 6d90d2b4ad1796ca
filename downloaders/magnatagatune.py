"""``magnatagatune``: MagnaTagATune, 25,863 ~29 s clips of Magnatune songs with 188 binary tags.

Host key ``magnatagatune`` (origin ``https://mirg.city.ac.uk/datasets/magnatagatune``), which serves
``annotations_final.csv`` and ``clip_info_final.csv`` (TAB-separated; parsed in
:mod:`downloaders.formats.magnatagatune`) and the audio as one zip byte-split into ``mp3.zip.001``…``003``.

``catalog`` fetches the two metadata files and makes one row per annotated clip, in clip-id order (option
``split`` keeps one split): ``tags`` are the tag columns that hold 1, ``split`` the usual folder split
(0–b train, c valid, d–f test), no captions (MTT has none; title, artist and album go to ``extra``),
``group`` the song (clips of one song share artist, album and track number). Clips are whole files, so
``start_s``/``end_s`` are ``None``.

``acquire`` fetches the three parts, checks each part's size against the option ``part_sizes`` (default:
the published sizes, since no checksums are published; ``any`` trusts the server's Content-Length), joins
them into ``mp3.zip`` (the parts are byte slices of one zip whose central directory is at the end of part
3, so they cannot be opened one by one) and extracts only the members its rows need into ``mp3/``. A
``--limit``ed run therefore still downloads all ~3 GB. The parts are kept as published, so a re-run
verifies them from their sidecars instead of downloading again. The three clips that are zero bytes in
the published archive are recorded as ``empty_audio``, permanent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from downloaders.base import Source, SourceContext, SourceError, naming_override, record_catalog_outcomes
from downloaders.formats import magnatagatune as mtt
from downloaders.transports.archives import Limits, discard_if_broken, extract, join_parts
from downloaders.transports.errors import ArchiveError, DownloadError
from downloaders.transports.http import HttpClient, discard
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow
from store.status import FailureClass, StatusRecord

DATASET = "magnatagatune"
ORIGIN = "https://mirg.city.ac.uk/datasets/magnatagatune"
PARTS = ("mp3.zip.001", "mp3.zip.002", "mp3.zip.003")
PUBLISHED_PART_SIZES = (1_100_000_000, 1_100_000_000, 772_769_864)
JOINED = "mp3.zip"
AUDIO_DIR = "mp3"
LICENSE = "CC-BY-NC-SA-3.0"
STAGE = "acquire"
SPLITS = ("train", "valid", "test")

T = TypeVar("T")

log = logging.getLogger(__name__)


def _base_url(ctx: SourceContext) -> str:
    return ctx.settings.mirrors.get(DATASET, ORIGIN).rstrip("/")


def _record_rejections(root: DataRoot, rejected: list[mtt.Rejected]) -> None:
    """Annotation lines the catalog cannot use, under the clip's item id when its clip id is known. The
    annotations are read whole every run and are the only source of these records, so whatever an earlier
    run rejected and this one does not now parses."""
    failures = [StatusRecord.failed(make_item_id(DATASET, line.key), "catalog", line.reason, line.detail)
                for line in rejected]
    record_catalog_outcomes(root, DATASET, failures, resolved=lambda item_id: True)


def _metadata(ctx: SourceContext, client: HttpClient, name: str, parse: Callable[[str], T]) -> T:
    """Fetch and parse one metadata file; one that does not parse (an error page saved in its place) is
    deleted, so the next run downloads it again."""
    target = ctx.root.raw_dir(DATASET) / name
    try:
        client.fetch(f"{_base_url(ctx)}/{name}", target, description=f"MagnaTagATune {name}")
    except DownloadError as error:
        raise SourceError(f"{DATASET}: could not download {name}: {error.detail}") from None
    try:
        return parse(mtt.decode(target.read_bytes()))
    except mtt.FormatError as error:
        discard(target)
        raise SourceError(f"{DATASET}: {error}; the file was deleted, so the next run downloads it "
                          "again") from None


def _split(ctx: SourceContext) -> str | None:
    split = ctx.options.get("split")
    if split is not None and split not in SPLITS:
        raise SourceError(f"{DATASET}: split={split!r}; the splits are {', '.join(SPLITS)}")
    return split


def catalog(ctx: SourceContext) -> Iterator[ManifestRow]:
    _part_sizes(ctx)
    split = _split(ctx)
    client = HttpClient(ctx.settings)
    clips, rejected = _metadata(ctx, client, mtt.ANNOTATIONS, mtt.read_annotations)
    info, unusable = _metadata(ctx, client, mtt.CLIP_INFO, mtt.read_clip_info)
    _record_rejections(ctx.root, rejected)
    if unusable:
        log.warning("%s: %d line(s) of %s were unusable; those clips have no title or artist",
                    DATASET, unusable, mtt.CLIP_INFO)
    ordered = sorted(clips, key=lambda clip: int(clip.clip_id))
    chosen = [clip for clip in ordered if split is None or mtt.split_of(clip.mp3_path) == split]
    for clip in chosen[: ctx.limit]:
        yield row_for(clip, info.get(clip.clip_id))


def row_for(clip: mtt.Annotation, info: dict[str, str] | None) -> ManifestRow:
    extra = {"group": mtt.song_of(clip.mp3_path, info), "clip_id": clip.clip_id, **(info or {})}
    return ManifestRow(
        item_id=make_item_id(DATASET, clip.clip_id),
        dataset=DATASET,
        source=clip.mp3_path,
        split=mtt.split_of(clip.mp3_path),
        tags=clip.tags,
        license=LICENSE,
        extra=ManifestRow.encode_extra(extra),
        group=f"{DATASET}:{extra['group']}",
    )


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    return root.raw_dir(DATASET) / AUDIO_DIR / row.source


def _part_sizes(ctx: SourceContext) -> tuple[int, ...] | None:
    raw = str(ctx.options.get("part_sizes", "")).strip()
    if not raw:
        return PUBLISHED_PART_SIZES
    if raw == "any":
        return None
    try:
        sizes = tuple(int(value) for value in raw.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != len(PARTS) or min(sizes) <= 0:
        raise SourceError(f"{DATASET}: part_sizes={raw!r} must be three positive byte counts separated by "
                          "commas (e.g. 1100000000,1100000000,772769864), or 'any'")
    return sizes


def _joined_archive(ctx: SourceContext) -> Path:
    """The whole ``mp3.zip``: every part fetched (resumable, size-checked), then joined once."""
    client = HttpClient(ctx.settings)
    raw = ctx.root.raw_dir(DATASET)
    sizes = _part_sizes(ctx)
    try:
        parts = [
            client.fetch(f"{_base_url(ctx)}/{name}", raw / name, size=sizes[index] if sizes else None,
                         description=f"MagnaTagATune {name}")
            for index, name in enumerate(PARTS)
        ]
        return join_parts(parts, raw / JOINED, sizes=sizes)
    except DownloadError as error:
        raise naming_override(error, "part_sizes", "<bytes of .001>,<.002>,<.003> (or any)",
                              when="size_mismatch") from None


def _extract(ctx: SourceContext, rows: Sequence[ManifestRow]) -> dict[str, DownloadError]:
    """Extract the rows' members; returns the members that were refused, each with its own error.

    A joined zip that does not decode came from damaged parts (no checksums are published to catch them
    earlier): the parts and the zip are deleted, so the next run downloads and joins them again.
    """
    raw = ctx.root.raw_dir(DATASET)
    try:
        extract(_joined_archive(ctx), raw / AUDIO_DIR, members=[row.source for row in rows],
                limits=Limits.of(ctx.settings))
    except ArchiveError as error:
        return error.refused
    except DownloadError as error:
        discard_if_broken(error, raw / JOINED, *(raw / name for name in PARTS))
        raise
    return {}


def _outcome(row: ManifestRow, root: DataRoot, refused: dict[str, DownloadError]) -> StatusRecord:
    if row.source in refused:
        return refused[row.source].record(row.item_id, STAGE)
    path = audio_path(row, root)
    if not path.is_file():
        return StatusRecord.failed(row.item_id, STAGE, "missing_member",
                                   f"{row.source} is listed in {mtt.ANNOTATIONS} but was not extracted from "
                                   f"{JOINED}; delete {JOINED} to join the parts again",
                                   failure_class=FailureClass.TRANSIENT)
    if path.stat().st_size == 0:
        known = row.extra_fields.get("clip_id") in mtt.KNOWN_EMPTY
        note = " (one of the three clips known to be empty in the published archive)" if known else ""
        return StatusRecord.failed(row.item_id, STAGE, "empty_audio",
                                   f"{row.source} is zero bytes in {JOINED}{note}; there is no audio to use")
    return StatusRecord.ok(row.item_id, STAGE, output=str(path.relative_to(root.path)))


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    """Extract the members these rows need; rows whose mp3 is already there need no download at all."""
    needed = [row for row in rows if not audio_path(row, ctx.root).is_file()]
    refused: dict[str, DownloadError] = {}
    if needed:
        try:
            refused = _extract(ctx, needed)
        except DownloadError as error:
            refused = {row.source: error for row in needed}
    for row in rows:
        yield _outcome(row, ctx.root, refused)


SOURCE = Source(
    name=DATASET,
    description="MagnaTagATune: 25,863 ~29 s clips (16 kHz mono MP3) of 5,223 Magnatune songs with 188 "
                "crowd-sourced tags and the usual folder split; no captions.",
    needs="HTTP access to host key 'magnatagatune' (mirg.city.ac.uk); ~3 GB download (mp3.zip.001-003) even "
          "with --limit, ~6 GB on disk with the joined zip",
    catalog=catalog,
    acquire=acquire,
    audio_path=audio_path,
    options={
        "split": "only this split: train (folders 0-b), valid (c) or test (d-f); default all",
        "part_sizes": "byte sizes of mp3.zip.001,002,003 to check (default the published "
                      "1100000000,1100000000,772769864; 'any' trusts the server's Content-Length)",
    },
)
