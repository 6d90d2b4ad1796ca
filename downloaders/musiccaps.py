"""``musiccaps``: 5,521 ten-second YouTube segments, each with a caption by a musician and an aspect list.

Metadata: ``musiccaps-public.csv`` from the Hugging Face dataset ``google/MusicCaps`` at a pinned revision
(option ``revision``), through ``settings.hf_endpoint``; it lands in ``raw/musiccaps/`` as published.
Audio: only the segment ``[start_s, end_s]`` of each video, downloaded with yt-dlp from
``settings.youtube_url`` (see :mod:`downloaders.formats.youtube_items`); about 7 % of the videos are gone.

Rows: ``musiccaps:<ytid>@<start>``; split ``test`` for segments from AudioSet's eval set
(``is_audioset_eval``), else ``train``; the caption is the caption and the aspects are the tags;
``extra`` keeps the AudioSet labels, the rater (``author_id``) and ``is_balanced_subset``. A row the parser
cannot read (an aspect list that is not a list literal, a mangled id) is recorded as a failed ``catalog``
record and the other rows are used. Licence: CC BY-SA 4.0 for the captions and metadata; the audio is
the uploaders' and is not redistributed by Google.
"""

from __future__ import annotations

from pathlib import Path

from downloaders.base import Source, SourceContext, SourceError, naming_override
from downloaders.formats import youtube_items
from downloaders.formats.musiccaps import FILE, MusicCapsClip, read_musiccaps
from downloaders.formats.segments import Rejected
from downloaders.transports.errors import DownloadError
from downloaders.transports.hub import hub_download
from processors.text import clean_captions, clean_tags
from store.manifest import ManifestRow

DATASET = "musiccaps"
REPO = "google/MusicCaps"
REVISION = "0a51889b340037bb75a9a0858af2e4ece21f7f89"
"""The repo's commit as of March 2023 (the CSV has not changed since it was published)."""
LICENSE = "CC-BY-SA-4.0"
SPLITS = ("train", "test")


def catalog(ctx: SourceContext) -> list[ManifestRow]:
    splits = _splits(ctx)
    path = _metadata(ctx)
    rows: list[ManifestRow] = []
    rejections: list[Rejected] = []
    for entry in read_musiccaps(path):
        if ctx.limit is not None and len(rows) >= ctx.limit:
            break
        if isinstance(entry, Rejected):
            rejections.append(entry)
        elif split_of(entry) in splits:
            rows.append(row_of(entry))
    youtube_items.record_rejections(ctx.root, DATASET, rejections, file_name=FILE,
                                    accepted=[row.item_id for row in rows])
    return rows


def split_of(clip: MusicCapsClip) -> str:
    return "test" if clip.is_audioset_eval else "train"


def row_of(clip: MusicCapsClip) -> ManifestRow:
    extra = {
        "audioset_labels": list(clip.audioset_labels),
        "author_id": clip.author_id,
        "is_balanced_subset": clip.is_balanced_subset,
    }
    return youtube_items.segment_row(
        DATASET, clip.segment, split=split_of(clip), captions=clean_captions([clip.caption]),
        tags=clean_tags(clip.aspects), license=LICENSE, extra=extra,
    )


def _metadata(ctx: SourceContext) -> Path:
    revision = str(ctx.options.get("revision") or REVISION).strip()
    try:
        return hub_download(ctx.settings, REPO, FILE, revision=revision, target_dir=ctx.root.raw_dir(DATASET))
    except DownloadError as error:
        detail = naming_override(error, "revision", "<commit>", when="not_found").detail
        raise SourceError(f"musiccaps: could not get {FILE} from {REPO}@{revision}: {detail}") from None


def _splits(ctx: SourceContext) -> set[str]:
    chosen = {part.strip() for part in str(ctx.options.get("split") or ",".join(SPLITS)).split(",") if part.strip()}
    unknown = sorted(chosen - set(SPLITS))
    if unknown or not chosen:
        raise SourceError(f"musiccaps: unknown split {', '.join(unknown) or '(none)'}; choose train, test or "
                          "train,test")
    return chosen


SOURCE = Source(
    name=DATASET,
    description="MusicCaps: 5.5k ten-second YouTube music segments with captions and aspect lists by musicians.",
    needs="the Hugging Face Hub (settings.hf_endpoint) for the CSV; YouTube (settings.youtube_url, yt-dlp, "
          "ffmpeg) for the audio; cookies (settings.youtube_cookies) where YouTube asks to sign in",
    catalog=catalog,
    acquire=youtube_items.acquire,
    audio_path=youtube_items.audio_path,
    clip_range=youtube_items.clip_range,
    options={
        "revision": f"Hub revision of {REPO} to read (default: the pinned commit {REVISION[:8]})",
        "split": "train, test (the segments from AudioSet's eval set) or train,test (default: both)",
    },
)
