"""``musicbench``: MusicBench (MusicCaps clips, their pitch/tempo/volume-augmented copies and enhanced
captions) from the Hugging Face Hub dataset ``amaai-lab/MusicBench``.

Host: the Hub (``settings.hf_endpoint``), at a pinned revision (option ``revision`` overrides it); a token
in ``HF_TOKEN`` is used by the Hub transport and never printed. The repo renamed its files, so the train
and test JSON files and the audio tarball are found in the repo listing by pattern
(:mod:`downloaders.formats.musicbench`).

Catalog: one row per audio file (``musicbench:<file stem>``, whole file), captions ``main_caption`` then
``alt_caption`` (rows repeating a location, and TestA/TestB which share their audio, are merged), tags
from the key and a tempo class, extras with bpm, key, chords, beat counts, the leakage flag and the
MusicCaps YouTube id as ``group``. Splits: ``test`` for the test files; ``train`` for the train file,
except that train rows whose clip is in MusicCaps' evaluation set (``is_audioset_eval_mcaps``, applied to
every augmented copy of that clip) get the split ``eval_mcaps``, so they are never trained on and stay
apart from MusicBench's own test set. Malformed rows are skipped and recorded as failed ``catalog``
records (``musicbench:<json file>#<line>``).

Acquire: the audio is one ~16.8 GB gzip tar with no random access. It is downloaded once with the HTTP
transport from the Hub's resolve URL (following the LFS redirect), like every other archive: resumed from
its last byte across retries and runs, size-capped, one worker per file, recorded in a verified sidecar.
No token is sent for it (the repo is public). Then one streaming pass extracts the members of every
catalogued item still missing its audio, under a lock, so concurrent work units share one pass and a
``--limit``ed run extracts only what its manifest holds (the extractor stops reading at the last wanted
member). Audio lands in ``raw/musicbench/audio/<location>``; a truncated or corrupt tarball is deleted so
the next run fetches it again.
"""

from __future__ import annotations

import itertools
import logging
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from downloaders.base import Source, SourceContext, SourceError, naming_override, record_catalog_outcomes
from downloaders.formats import youtube_items
from downloaders.formats.musicbench import (
    PARTS,
    Item,
    MetadataError,
    Record,
    Rejected,
    archive_prefix,
    flagged_groups,
    member_name,
    merge_records,
    metadata_files,
    read_metadata,
    safe_location,
    split_of,
    tarball_file,
)
from downloaders.transports.archives import Limits, discard_if_broken, extract
from downloaders.transports.errors import ArchiveError, DownloadError
from downloaders.transports.http import HttpClient
from downloaders.transports.hub import hub_download, hub_files
from store.atomic import locked
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow, read_manifest
from store.status import FailureClass, StatusRecord

DATASET = "musicbench"
REPO_ID = "amaai-lab/MusicBench"
REVISION = "c3ad7c27d9d87ea0da8c5592d310fb53a59d6639"
"""The newest commit of the repo we found referenced (its README's blame page); UNVERIFIED as the tip of
``main``. Pinned so a rename upstream cannot change what a run reads; override with ``-o revision=``."""
LICENSE = "CC-BY-SA-3.0"
SPLITS = {"train": ("train",), "test_a": ("test_a",), "test_b": ("test_b",), "test": ("test_a", "test_b"),
          "all": PARTS}
AUDIO_DIR = "audio"
STAGE = "acquire"
_PEEK_MEMBERS = 64
"""Archive members read to learn its top folder before giving up."""

log = logging.getLogger(__name__)


def catalog(ctx: SourceContext) -> list[ManifestRow]:
    revision = _revision(ctx)
    parts = _parts(ctx)
    raw = ctx.root.raw_dir(DATASET)
    listing = _listing(ctx, revision)
    names = metadata_files(listing)
    missing = [part for part in parts if part not in names]
    archive = tarball_file(listing)
    if missing or archive is None:
        absent = [f"the {part} JSON" for part in missing] + (["the audio tarball"] if archive is None else [])
        wanted = ", ".join(absent)
        raise SourceError(
            f"{DATASET}: {REPO_ID}@{revision} has no file that looks like {wanted}; it lists: "
            f"{', '.join(sorted(listing)) or 'nothing'}. Pin another revision with -o revision=<commit>."
        )
    records, rejected = [], []
    for part in parts:
        path = _download(ctx, names[part], revision, raw)
        try:
            good, bad = read_metadata(path, part)
        except MetadataError as error:
            raise SourceError(f"{DATASET}: {error}") from None
        records += good
        rejected += bad
    _warn_without_flag(records, names, parts)
    items, duplicates = _unique_ids(merge_records(records))
    _record_rejections(ctx.root, [*rejected, *duplicates], read=[names[part] for part in parts])
    flagged = flagged_groups(items)
    return [_row(item, split_of(item, flagged), archive, revision) for item in items][: ctx.limit]


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    missing = [row for row in rows if not _has_audio(row, ctx.root)]
    refused: dict[str, DownloadError] = {}
    if missing:
        try:
            refused = _extract_missing(missing, ctx)
        except DownloadError as error:
            refused = {row.source: error for row in missing}
    for row in rows:
        if _has_audio(row, ctx.root):
            output = audio_path(row, ctx.root).relative_to(ctx.root.path)
            yield StatusRecord.ok(row.item_id, STAGE, output=str(output))
        elif row.source in refused:
            yield refused[row.source].record(row.item_id, STAGE)
        else:
            yield StatusRecord.failed(
                row.item_id, STAGE, "missing_member",
                f"{_archive(row)} has no member for {row.source!r}; the audio of this row was not published",
            )


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    return root.raw_dir(DATASET) / AUDIO_DIR / _location(row)


def _revision(ctx: SourceContext) -> str:
    return str(ctx.options.get("revision") or REVISION).strip()


def _parts(ctx: SourceContext) -> tuple[str, ...]:
    split = str(ctx.options.get("split") or "train").strip().lower()
    if split not in SPLITS:
        raise SourceError(f"{DATASET}: split={split!r} is not one of {', '.join(SPLITS)}")
    return SPLITS[split]


def _listing(ctx: SourceContext, revision: str) -> list[str]:
    try:
        return hub_files(ctx.settings, REPO_ID, revision=revision)
    except DownloadError as error:
        raise SourceError(f"{DATASET}: could not list {REPO_ID}@{revision}: {_pinned(error)}") from None


def _download(ctx: SourceContext, name: str, revision: str, raw: Path) -> Path:
    try:
        return hub_download(ctx.settings, REPO_ID, name, revision=revision, target_dir=raw)
    except DownloadError as error:
        raise SourceError(
            f"{DATASET}: could not download {name} from {REPO_ID}@{revision}: {_pinned(error)}"
        ) from None


def _pinned(error: DownloadError) -> str:
    """The error's detail; when the revision is not there, with the option that pins another."""
    return naming_override(error, "revision", "<commit>", when="not_found").detail


def _warn_without_flag(records: list[Record], names: dict[str, str], parts: Sequence[str]) -> None:
    """Files that predate ``is_audioset_eval_mcaps`` cannot keep MusicCaps evaluation clips out of train."""
    if "train" in parts and any(r.part == "train" and r.eval_mcaps is None for r in records):
        log.warning("%s: %s has rows without is_audioset_eval_mcaps; MusicCaps evaluation clips among them "
                    "cannot be kept out of train. Pin a revision whose files carry the flag.",
                    DATASET, names["train"])


def _unique_ids(items: list[Item]) -> tuple[list[Item], list[Rejected]]:
    """Items whose file stems (their ids) are unique; a later location with a stem already taken is
    rejected rather than silently overwriting the first."""
    seen: dict[str, str] = {}
    kept, rejected = [], []
    for item in items:
        first = seen.setdefault(item.stem, item.location)
        if first == item.location:
            kept.append(item)
            continue
        detail = (f"{item.origin}: {item.location} has the same file name as {first}, so both would be item "
                  f"{make_item_id(DATASET, item.stem)}; only the first is kept")
        rejected.append(Rejected(item.origin, "duplicate_id", detail))
    return kept, rejected


def _row(item: Item, split: str, archive: str, revision: str) -> ManifestRow:
    extra: dict[str, Any] = {
        "group": item.group,
        "ytid": item.ytid,
        "files": list(item.parts),
        "bpm": item.bpm,
        "key": item.key,
        "chords": list(item.chords),
        "beats": item.beats,
        "beats_per_bar": item.beats_per_bar,
        "is_audioset_eval_mcaps": item.eval_mcaps,
        "archive": archive,
        "revision": revision,
    }
    return ManifestRow(
        item_id=make_item_id(DATASET, item.stem),
        dataset=DATASET,
        source=item.location,
        split=split,
        captions=item.captions,
        tags=item.tags,
        license=LICENSE,
        extra=ManifestRow.encode_extra(extra),
        group=youtube_items.youtube_group(item.ytid) if item.ytid else f"{DATASET}:{item.group}",
        held_out=item.eval_mcaps is True,
    )


def _location(row: ManifestRow) -> str:
    """The row's location, checked again: a manifest is a file anyone can edit."""
    try:
        return safe_location(row.source)
    except ValueError as error:
        raise SourceError(f"{row.item_id}: {error}; re-run the {DATASET} catalog") from None


def _archive(row: ManifestRow) -> str:
    return row.extra_fields["archive"]


def _has_audio(row: ManifestRow, root: DataRoot) -> bool:
    path = audio_path(row, root)
    return path.is_file() and path.stat().st_size > 0


def _extract_missing(rows: Sequence[ManifestRow], ctx: SourceContext) -> dict[str, DownloadError]:
    """Download the tarball, then extract, in one pass, every catalogued item still missing its audio.

    Returns the members refused (hostile or absent) by location. Under the lock a unit that waited finds
    its audio already extracted by the one before it and does nothing.
    """
    archive, revision = _archive(rows[0]), rows[0].extra_fields["revision"]
    raw = ctx.root.raw_dir(DATASET)
    with locked(raw / "audio"):  # one extraction pass at a time: each would stream the whole archive
        if all(_has_audio(row, ctx.root) for row in rows):
            return {}
        tarball = HttpClient(ctx.settings).fetch(
            _resolve_url(ctx, archive, revision), raw / PurePosixPath(archive).name,
            description=f"{DATASET} audio ({archive})",
        )
        wanted = _still_missing(rows, ctx.root)
        try:
            prefix = _prefix(tarball, {PurePosixPath(row.source).parts[0] for row in wanted})
            members = {f"{prefix}{row.source}": row.source for row in wanted}
            extract(tarball, raw / AUDIO_DIR, members=list(members),
                    limits=Limits.of(ctx.settings), strip_components=prefix.count("/"))
        except ArchiveError as error:
            refused = {member_name(name): problem for name, problem in error.refused.items()}
            return {members[name]: problem for name, problem in refused.items() if name in members}
        except DownloadError as error:
            if not discard_if_broken(error, tarball):
                raise
            detail = f"{error.detail} It was deleted: the next run downloads it again."
            raise DownloadError(error.reason, detail, failure_class=error.failure_class) from error
    return {}


def _still_missing(rows: Sequence[ManifestRow], root: DataRoot) -> list[ManifestRow]:
    """This unit's rows and every other catalogued row of the same archive without audio, so a full run
    reads the 16.8 GB archive once rather than once per unit."""
    archive = _archive(rows[0])
    catalogued = [r for r in read_manifest(root.manifest(DATASET)) if r.extra_fields["archive"] == archive]
    by_id = {row.item_id: row for row in [*rows, *catalogued]}
    return [row for row in by_id.values() if not _has_audio(row, root)]


def _resolve_url(ctx: SourceContext, archive: str, revision: str) -> str:
    endpoint = ctx.settings.hf_endpoint.rstrip("/")
    return f"{endpoint}/datasets/{REPO_ID}/resolve/{quote(revision, safe='')}/{quote(archive)}"


def _prefix(tarball: Path, folders: set[str]) -> str:
    """The tarball's top folder, read off its first members (a few kilobytes of the stream)."""
    try:
        with tarfile.open(tarball, "r|gz") as stream:
            prefix = archive_prefix((m.name for m in itertools.islice(stream, _PEEK_MEMBERS)), folders)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DownloadError(
            "corrupt_archive", f"{tarball.name} is not a readable gzip tar ({error})."
        ) from None
    if prefix is None:
        raise DownloadError(
            "unexpected_layout",
            f"none of the first {_PEEK_MEMBERS} members of {tarball.name} lies in a folder named "
            f"{' or '.join(sorted(folders))}; the archive's layout changed, so pin another revision with "
            "-o revision=<commit>",
            failure_class=FailureClass.PERMANENT,
        )
    return prefix


def _record_rejections(root: DataRoot, rejected: list[Rejected], *, read: Sequence[str]) -> None:
    """Rejected rows under ``musicbench:<file>#<line>``; a row an earlier run rejected is resolved only when
    this run read its file (the split chosen decides which files are read)."""
    failures = [StatusRecord.failed(make_item_id(DATASET, r.origin), "catalog", r.reason, r.detail)
                for r in rejected]
    files = {PurePosixPath(name).name for name in read}
    record_catalog_outcomes(root, DATASET, failures, resolved=lambda item_id: _origin_file(item_id) in files)


def _origin_file(item_id: str) -> str:
    """``MusicBench_train.json`` of ``musicbench:MusicBench_train.json#12``."""
    return item_id.split(":", 1)[1].rpartition("#")[0]


SOURCE = Source(
    name=DATASET,
    description="MusicBench: 52,768 augmented MusicCaps clips with enhanced captions, tempo, key and chords "
    "(Hugging Face Hub, one 16.8 GB tarball).",
    needs=f"the Hugging Face Hub ({REPO_ID} via settings.hf_endpoint; public, no token needed); about 17 GB "
    "of disk for the tarball plus the extracted WAVs",
    catalog=catalog,
    acquire=acquire,
    audio_path=audio_path,
    options={
        "split": "train (default), test_a, test_b, test (both test files) or all",
        "revision": f"Hub commit of {REPO_ID} to read (default {REVISION[:7]}, pinned)",
    },
)
