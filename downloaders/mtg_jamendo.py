"""``mtg_jamendo``: MTG-Jamendo's full-length Creative Commons tracks, cut into windows, with their tags.

Metadata comes from the ``data/`` folder of github.com/MTG/mtg-jamendo-dataset at a pinned commit (host
key ``mtg-jamendo-meta``, origin ``https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/<commit>``):
the subset's track TSV, the three TSVs of the chosen split, and the sha256 lists of the tars and of every
track. Audio comes from MTG's CDN (host key ``mtg-jamendo``, origin ``https://cdn.freesound.org/mtg-jamendo``)
as 100 tars ``<dataset>/<type>/<dataset>_<type>-NN.tar``; tar ``NN`` holds folder ``NN`` of the TSV's PATH.
MTG publishes tars for two datasets only: ``autotagging_moodtheme`` (used for that subset) and ``raw_30s``
(every other subset is a part of it).

Every file lands under ``raw/mtg_jamendo/`` at the path it has on its host. Tracks are 30 s to several
minutes long; each becomes one row per ``clip_s`` window (``processors.clip.windows`` on the TSV's
DURATION), with the track id as ``group``, or one row ``mtg_jamendo:<track id>`` for the whole track when
the settings ask for whole tracks (``clip_s = 0`` or ``"mtg_jamendo"`` in ``whole_tracks``). Rows are
ordered by tar, so a ``--limit``ed run needs few tars and units of consecutive rows mostly share one.
``acquire`` fetches each tar its rows need (sha256 from the list), extracts only those rows' tracks and
checks each against the per-track sha256 list.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from downloaders.base import Source, SourceContext, SourceError, acquire_record, record_catalog_outcomes
from downloaders.formats.mtg_jamendo import FormatError, Track, jamendo_group, read_checksums, read_tracks
from downloaders.transports.archives import Limits, extract_verified, member_mismatch
from downloaders.transports.errors import DownloadError, permanent
from downloaders.transports.http import Checksum, HttpClient
from processors.clip import catalog_spans
from processors.text import clean_tags
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow
from store.status import StatusRecord

DATASET = "mtg_jamendo"
STAGE = "acquire"
COMMIT = "1b4fa8c32e076c73b5175c1703ae805b4109309d"
META_HOST, META_ORIGIN = "mtg-jamendo-meta", f"https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/{COMMIT}"
AUDIO_HOST, AUDIO_ORIGIN = "mtg-jamendo", "https://cdn.freesound.org/mtg-jamendo"
LICENSE = "CC (per track, see audio_licenses.txt of MTG/mtg-jamendo-dataset); metadata CC BY-NC-SA 4.0"
METADATA_MAX_BYTES = 64 << 20
"""The largest published list is a few MiB; anything far bigger is not the file we asked for."""

SUBSETS_WITH_SPLITS = ("autotagging", "autotagging_top50tags", "autotagging_genre", "autotagging_instrument",
                       "autotagging_moodtheme")
SUBSETS = ("raw_30s", "raw_30s_cleantags", "raw_30s_cleantags_50artists", *SUBSETS_WITH_SPLITS)
TSV_OF = {"autotagging": "raw_30s_cleantags_50artists.tsv"}
"""``data/autotagging.tsv`` is a git symlink: fetched over HTTP it is the 31-byte name of its target."""
AUDIO_TYPES = ("audio", "audio-low")
SPLITS = tuple(f"split-{n}" for n in range(5))
SPLIT_PARTS = {"train": "train", "validation": "valid", "test": "test"}
DEFAULTS = {"subset": "autotagging_moodtheme", "audio": "audio-low", "split": "split-0"}


@dataclass(frozen=True)
class Choice:
    """What the user's options select: the track list, the split, and the tars the audio comes from."""

    subset: str
    audio: str
    split: str | None

    @property
    def tar_dataset(self) -> str:
        return "autotagging_moodtheme" if self.subset == "autotagging_moodtheme" else "raw_30s"

    @property
    def tsv(self) -> str:
        return TSV_OF.get(self.subset, f"{self.subset}.tsv")

    def split_files(self) -> dict[str, str]:
        """``data/`` file → split label, for the three parts of the chosen split."""
        if self.split is None:
            return {}
        return {f"splits/{self.split}/{self.subset}-{part}.tsv": label for part, label in SPLIT_PARTS.items()}

    def checksum_list(self, kind: str) -> str:
        """``download/<dataset>_<type>_sha256_<kind>.txt`` with ``kind`` ``tars`` or ``tracks``."""
        return checksum_list(self.tar_dataset, self.audio, kind)

    def archive(self, track: Track) -> str:
        """The tar's path on the audio host: ``<dataset>/<type>/<dataset>_<type>-NN.tar``."""
        name = f"{self.tar_dataset}_{self.audio}-{track.archive_index}.tar"
        return f"{self.tar_dataset}/{self.audio}/{name}"


def checksum_list(tar_dataset: str, audio: str, kind: str) -> str:
    return f"download/{tar_dataset}_{audio}_sha256_{kind}.txt"


def choice_of(options: Mapping[str, Any]) -> Choice:
    """The validated options, or a ``SourceError`` that says which values are allowed."""
    subset = str(options.get("subset") or DEFAULTS["subset"])
    audio = str(options.get("audio") or DEFAULTS["audio"])
    if subset not in SUBSETS:
        raise SourceError(f"{DATASET}: subset={subset!r} is not one of {', '.join(SUBSETS)}")
    if audio not in AUDIO_TYPES:
        raise SourceError(f"{DATASET}: audio={audio!r} is not one of {', '.join(AUDIO_TYPES)}")
    split = options.get("split")
    if subset not in SUBSETS_WITH_SPLITS:
        if split:
            raise SourceError(f"{DATASET}: subset {subset} has no official splits; leave out split=, or "
                              f"choose one of {', '.join(SUBSETS_WITH_SPLITS)}")
        return Choice(subset, audio, None)
    split = str(split or DEFAULTS["split"])
    if split not in SPLITS:
        raise SourceError(f"{DATASET}: split={split!r} is not one of {', '.join(SPLITS)}")
    return Choice(subset, audio, split)


def catalog(ctx: SourceContext) -> Iterator[ManifestRow]:
    choice = choice_of(ctx.options)
    client = HttpClient(ctx.settings)
    try:
        tracks, rejected = read_tracks(_metadata(ctx, client, choice.tsv), choice.tsv)
        splits = _splits(ctx, client, choice)
        tar_sums = _checksums(ctx, client, choice.checksum_list("tars"))
        _checksums(ctx, client, choice.checksum_list("tracks"))  # now: a broken list stops the catalog, once
    except (DownloadError, FormatError) as error:
        raise SourceError(f"{DATASET}: cannot read the metadata: {error}") from None
    published = [track for track in tracks if _tar_name(choice, track) in tar_sums]
    record_catalog_outcomes(ctx.root, DATASET, [
        *(_rejection(f"{choice.tsv}#{r.line}", r.reason, r.detail) for r in rejected),
        *(_unpublished(track, choice) for track in tracks if _tar_name(choice, track) not in tar_sums),
    ])
    published.sort(key=lambda track: track.archive_index)
    rows = (row for track in published for row in _rows(track, choice, splits.get(track.track_id), ctx))
    yield from itertools.islice(rows, ctx.limit)


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    extra = row.extra_fields
    return root.raw_dir(DATASET) / PurePosixPath(extra["archive"]).parent / extra["member"]


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    """Per tar: fetch it (sha256-checked) unless its rows' tracks are all there, extract only those tracks,
    check each against the per-track list. One record per row, in the order of the tars."""
    client = HttpClient(ctx.settings)
    by_archive: dict[str, list[ManifestRow]] = {}
    for row in rows:
        by_archive.setdefault(row.extra_fields["archive"], []).append(row)
    for archive, group in by_archive.items():
        yield from _acquire_archive(archive, group, ctx, client)


def _acquire_archive(
    archive: str, rows: list[ManifestRow], ctx: SourceContext, client: HttpClient
) -> Iterator[StatusRecord]:
    tar_dataset, audio, tar_name = PurePosixPath(archive).parts
    folder = ctx.root.raw_dir(DATASET) / tar_dataset / audio
    try:
        tar_sums = _checksums(ctx, client, checksum_list(tar_dataset, audio, "tars"))
        track_sums = _checksums(ctx, client, checksum_list(tar_dataset, audio, "tracks"))
    except (DownloadError, FormatError) as error:
        failure = error if isinstance(error, DownloadError) else permanent("bad_metadata", str(error))
        yield from (failure.record(row.item_id, STAGE) for row in rows)
        return
    members = sorted({row.extra_fields["member"] for row in rows})
    sha256 = tar_sums.get(tar_name)
    outcome = extract_verified(
        lambda: _fetch_tar(archive, sha256, ctx, client), folder, members,
        check=lambda member: _check(folder, member, track_sums),
        limits=Limits.of(ctx.settings),
    )
    for row in rows:
        yield acquire_record(row, audio_path(row, ctx.root), ctx.root, outcome[row.extra_fields["member"]])


def _fetch_tar(archive: str, sha256: str | None, ctx: SourceContext, client: HttpClient) -> Path:
    """The tar, downloaded and checked against its sha256 from the published list."""
    if sha256 is None:
        raise permanent("checksum_unknown", f"{archive} is not in the published sha256 list of tars; re-run "
                                            f"the catalog of {DATASET} to refresh the rows")
    base = ctx.settings.mirrors.get(AUDIO_HOST, AUDIO_ORIGIN).rstrip("/")
    return client.fetch(f"{base}/{archive}", ctx.root.raw_dir(DATASET) / archive,
                        checksum=Checksum("sha256", sha256), description=PurePosixPath(archive).name)


def _check(folder: Path, member: str, track_sums: dict[str, str]) -> DownloadError | None:
    """``None`` when ``member`` is on disk with the bytes the per-track sha256 list gives; else why not."""
    path = folder / member
    if not path.is_file():
        return permanent("missing_member", f"{member} is not in its tar, although the track list names it")
    expected = track_sums.get(member)
    if expected is None:
        return permanent("checksum_unknown", f"{member} is not in the published sha256 list of tracks, so it "
                                             "cannot be verified")
    return member_mismatch(path, Checksum("sha256", expected), name=member, listed_in="the published list",
                           advice="Its tar matched: check MTG's current lists, then run again with --force")


def _metadata(ctx: SourceContext, client: HttpClient, name: str) -> bytes:
    """``data/<name>`` from the metadata host, fetched once into ``raw/mtg_jamendo/data/``."""
    base = ctx.settings.mirrors.get(META_HOST, META_ORIGIN).rstrip("/")
    target = ctx.root.raw_dir(DATASET) / "data" / name
    return client.fetch(f"{base}/data/{name}", target, max_bytes=METADATA_MAX_BYTES).read_bytes()


def _checksums(ctx: SourceContext, client: HttpClient, name: str) -> dict[str, str]:
    return read_checksums(_metadata(ctx, client, name), name)


def _splits(ctx: SourceContext, client: HttpClient, choice: Choice) -> dict[str, str]:
    """Track id → ``train``/``valid``/``test`` in the chosen split; tracks the split leaves out are absent."""
    labels: dict[str, str] = {}
    for name, label in choice.split_files().items():
        tracks, _ = read_tracks(_metadata(ctx, client, name), name)
        labels.update((track.track_id, label) for track in tracks)
    return labels


def _tar_name(choice: Choice, track: Track) -> str:
    return PurePosixPath(choice.archive(track)).name


def _unpublished(track: Track, choice: Choice) -> StatusRecord:
    return _rejection(track.track_id, "no_archive", f"{track.track_id}: {_tar_name(choice, track)} is not in "
                      f"{choice.checksum_list('tars')}, so its audio is not published as {choice.audio}")


def _rows(track: Track, choice: Choice, split: str | None, ctx: SourceContext) -> Iterator[ManifestRow]:
    settings = ctx.settings
    archive, member = choice.archive(track), track.member(choice.audio)
    extra = {
        "group": track.track_id,
        "artist_id": track.artist_id,
        "album_id": track.album_id,
        "duration_s": track.duration_s,
        "tags_by_category": _by_category(track),
        "subset": choice.subset,
        "archive": archive,
        "member": member,
    }
    for start, end in catalog_spans(DATASET, track.duration_s, settings):
        yield ManifestRow(
            item_id=make_item_id(DATASET, track.track_id, start),
            dataset=DATASET,
            source=f"{archive}#{member}",
            split=split,
            start_s=start,
            end_s=end,
            tags=clean_tags(tag for _, tag in track.tags),
            license=LICENSE,
            extra=ManifestRow.encode_extra(extra),
            group=jamendo_group(track.track_id),
        )


def _by_category(track: Track) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for category, tag in track.tags:
        grouped.setdefault(category, []).append(tag)
    return grouped


def _rejection(where: str, reason: str, detail: str) -> StatusRecord:
    return StatusRecord.failed(make_item_id(DATASET, where), "catalog", reason, detail)


SOURCE = Source(
    name=DATASET,
    description="MTG-Jamendo: 55k full-length Creative Commons tracks from Jamendo with genre, instrument "
                "and mood/theme tags, cut into clip_s windows.",
    needs=f"HTTP access to {AUDIO_ORIGIN} (host key '{AUDIO_HOST}') and raw.githubusercontent.com (host key "
          f"'{META_HOST}'); disk for whole tars (~0.5 GB each for autotagging_moodtheme audio-low)",
    catalog=catalog,
    acquire=acquire,
    audio_path=audio_path,
    options={
        "subset": f"track list: {', '.join(SUBSETS)} (default {DEFAULTS['subset']}, the smallest)",
        "audio": "audio (320 kbps MP3) or audio-low (mono VBR MP3, about a third of the size; default)",
        "split": f"official split of the autotagging subsets: {', '.join(SPLITS)} "
                 f"(default {DEFAULTS['split']})",
    },
)
