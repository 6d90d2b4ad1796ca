"""``local``: a folder of audio files the user already has, with an optional captions file.

The captions file (option ``captions``; by default ``captions.csv`` or ``captions.jsonl`` in the folder):

* CSV with a header row: ``path`` (required); ``caption`` (one caption) and/or ``captions`` (several,
  separated by ``|``); ``tags`` (separated by ``;`` or ``,``); ``split`` (optional).
* JSONL, one object per line: ``path``; ``caption`` or ``captions`` (a string is one caption, or a list
  of strings); ``tags`` (a list of strings, or one string separated as in CSV); ``split``.

Paths are relative to the folder (absolute paths inside it are accepted too); rows naming the same file
are merged. A malformed row (no path, bad JSON, a path outside the folder, a field of the wrong type)
is skipped and recorded as a failed ``catalog`` status record with id ``local:<captions file>#<line>``
(a later run that no longer rejects it records it as ok); the rest of the file is used.

Audio files in the folder (recursively, by extension, hidden files skipped) that the captions file does
not list are catalogued with no captions, so a folder without a captions file works too. A file listed
but missing still gets a row: ``acquire`` records it as ``missing_file``. Recordings longer than
``clip_s`` become one row per window (:func:`processors.clip.windows`), unless the settings ask for whole
tracks (``clip_s = 0`` or ``"local"`` in ``whole_tracks``): then every file is one row, id ``local:<path>``.
Nothing is copied: ``acquire`` checks that each file is there and readable, and ``audio_path`` points into
the folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from downloaders.base import BadRow, Rejected, Source, SourceContext, SourceError, record_catalog_outcomes
from processors.clip import catalog_spans
from processors.decode import probe_duration
from processors.errors import AudioError
from processors.text import clean_captions, clean_tags
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow
from store.settings import Settings
from store.status import StatusRecord

DATASET = "local"
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".mka", ".wma",
     ".aif", ".aiff"}
)
DEFAULT_CAPTIONS = ("captions.csv", "captions.jsonl")
_TAG_SEPARATORS = re.compile(r"[;,]")
_LINE_ID = re.compile(rf"^{DATASET}:.+#\d+$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionEntry:
    path: str
    """Relative to the folder, with ``/`` separators."""
    captions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    split: str | None = None


def catalog(ctx: SourceContext) -> list[ManifestRow]:
    folder = _folder(ctx)
    captions_file = _captions_file(folder, ctx.options.get("captions"))
    entries, rejected = read_captions(captions_file, folder) if captions_file else ([], [])
    if captions_file is not None:
        _record_rejections(ctx.root, captions_file, rejected)
    by_path = _merge(entries)
    for path in _audio_files(folder, skip=ctx.root.path):
        by_path.setdefault(path, CaptionEntry(path))
    chosen = sorted(by_path)[: ctx.limit]
    return [row for path in chosen for row in _rows(by_path[path], folder, ctx.settings)]


def acquire(rows: Sequence[ManifestRow], ctx: SourceContext) -> Iterator[StatusRecord]:
    for row in rows:
        path = audio_path(row, ctx.root)
        try:
            with path.open("rb"):
                pass
        except OSError as error:
            yield AudioError.from_os_error(path, error).record(row.item_id, "acquire")
        else:
            yield StatusRecord.ok(row.item_id, "acquire", output=str(path))


def audio_path(row: ManifestRow, root: DataRoot) -> Path:
    folder = row.extra_fields.get("root")
    if not folder:
        raise SourceError(f"{row.item_id}: its manifest row has no 'root' folder; re-run the local catalog")
    return Path(folder) / row.source


def read_captions(captions_file: Path, folder: Path) -> tuple[list[CaptionEntry], list[Rejected]]:
    """The good rows of a captions file and the malformed ones, with the line each starts on."""
    suffix = captions_file.suffix.lower()
    if suffix == ".csv":
        records, fields = _csv_records(captions_file), _csv_fields
    elif suffix in (".jsonl", ".ndjson"):
        records, fields = _jsonl_records(captions_file), _json_fields
    else:
        raise SourceError(f"{captions_file}: captions must be a .csv or .jsonl file")
    entries, rejected = [], []
    for line, record in records:
        try:
            if isinstance(record, BadRow):
                raise record
            entries.append(_entry(fields(record), folder))
        except BadRow as problem:
            rejected.append(Rejected.at(captions_file.name, line, problem))
    return entries, rejected


def _folder(ctx: SourceContext) -> Path:
    option = ctx.options.get("path")
    if not option:
        raise SourceError("local: the option 'path' is required: the folder that holds your audio files")
    folder = Path(option).expanduser().resolve()
    if not folder.is_dir():
        raise SourceError(f"local: {folder} is not a folder; set 'path' to the folder of your audio files")
    return folder


def _captions_file(folder: Path, option: str | None) -> Path | None:
    if option:
        path = Path(option).expanduser().resolve()
        if not path.is_file():
            raise SourceError(f"local: the captions file {path} does not exist")
        return path
    found = [folder / name for name in DEFAULT_CAPTIONS if (folder / name).is_file()]
    if len(found) > 1:
        names = " and ".join(DEFAULT_CAPTIONS)
        raise SourceError(f"local: {folder} has both {names}; choose one with the option 'captions'")
    if not found:
        log.info("local: no captions file in %s; every audio file is catalogued without captions", folder)
    return found[0] if found else None


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or []):
            raise SourceError(f"{path}: the header row must name a 'path' column (found {reader.fieldnames})")
        try:
            for row in reader:
                cells = {key: value for key, value in row.items() if isinstance(value, str) and key}
                yield reader.line_num - sum(value.count("\n") for value in cells.values()), cells
        except csv.Error as error:
            raise SourceError(f"{path} line {reader.line_num}: unreadable CSV ({error}); fix it") from None


def _csv_fields(cells: dict[str, str]) -> dict[str, Any]:
    """``{path, captions, tags, split}``: ``captions`` split on ``|``, ``tags`` on ``;`` and ``,``."""
    captions = [cells.get("caption"), *(cells.get("captions") or "").split("|")]
    tags = _TAG_SEPARATORS.split(cells.get("tags") or "")
    return {"path": cells.get("path"), "captions": captions, "tags": tags, "split": cells.get("split")}


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                yield number, BadRow("bad_json", f"not valid JSON ({error.msg}); fix or delete the line")
                continue
            if not isinstance(record, dict):
                yield number, BadRow("bad_json", 'not a JSON object; each line must be {"path": ..., ...}')
                continue
            yield number, record


def _json_fields(record: dict[str, Any]) -> dict[str, Any]:
    """``{path, captions, tags, split}`` from a JSON object, rejecting fields of the wrong type."""
    tags = record.get("tags")
    return {
        "path": record.get("path"),
        "captions": [*_strings(record, "caption"), *_strings(record, "captions")],
        "tags": _TAG_SEPARATORS.split(tags) if isinstance(tags, str) else _strings(record, "tags"),
        "split": record.get("split"),
    }


def _strings(record: dict[str, Any], key: str) -> list[str]:
    value = record.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise BadRow("bad_field", f"'{key}' must be a string or a list of strings, not {_shown(value)}")


def _shown(value: Any) -> str:
    return json.dumps(value)[:60]


def _entry(fields: dict[str, Any], folder: Path) -> CaptionEntry:
    raw_path = fields["path"]
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise BadRow("missing_path", "no 'path'; every row must name an audio file in the folder")
    relative = _inside(folder, raw_path.strip())
    if relative is None:
        detail = f"the path {raw_path!r} points outside {folder}; fix or delete the row"
        raise BadRow("path_outside_folder", detail)
    split = fields["split"] or None
    if split is not None and not isinstance(split, str):
        raise BadRow("bad_field", f"'split' must be a string, not {_shown(split)}")
    captions, tags = clean_captions(fields["captions"]), clean_tags(fields["tags"])
    return CaptionEntry(relative, captions, tags, split.strip() if split else None)


def _inside(folder: Path, raw_path: str) -> str | None:
    """``raw_path`` relative to ``folder`` when it names something inside it, judged on the text of the path
    (``..`` and absolute paths), not on symlinks: links the user put in the folder are theirs to follow."""
    candidate = Path(os.path.normpath(folder / raw_path))
    try:
        relative = candidate.relative_to(folder)
    except ValueError:
        return None
    return relative.as_posix() if relative.parts else None


def _merge(entries: list[CaptionEntry]) -> dict[str, CaptionEntry]:
    """One entry per file: captions and tags of repeated rows joined, the first split kept."""
    merged: dict[str, CaptionEntry] = {}
    for entry in entries:
        old = merged.get(entry.path)
        merged[entry.path] = entry if old is None else CaptionEntry(
            entry.path,
            clean_captions([*old.captions, *entry.captions]),
            clean_tags([*old.tags, *entry.tags]),
            old.split or entry.split,
        )
    return merged


def _audio_files(folder: Path, *, skip: Path) -> Iterator[str]:
    """Audio files under ``folder``; ``skip`` (the data root, if it lies inside) would feed clips back in."""
    for path in folder.rglob("*"):
        if path.is_relative_to(skip):
            continue
        relative = path.relative_to(folder)
        hidden = any(part.startswith(".") for part in relative.parts)
        if path.suffix.lower() in AUDIO_SUFFIXES and not hidden and path.is_file():
            yield relative.as_posix()


def _rows(entry: CaptionEntry, folder: Path, settings: Settings) -> list[ManifestRow]:
    """One row per window of a long recording, else (a short file, or whole tracks asked for) one row for
    the whole file.

    A file whose duration cannot be read still gets a whole-file row, so preprocessing records why.
    """
    extra: dict[str, Any] = {"root": str(folder)}
    try:
        duration = probe_duration(folder / entry.path)
    except AudioError:
        duration = None
    if duration is not None:
        extra["duration_s"] = round(duration, 3)
    return [
        ManifestRow(
            item_id=make_item_id(DATASET, entry.path, start),
            dataset=DATASET,
            source=entry.path,
            split=entry.split,
            start_s=start,
            end_s=end,
            captions=entry.captions,
            tags=entry.tags,
            extra=ManifestRow.encode_extra(extra),
        )
        for start, end in catalog_spans(DATASET, duration, settings, whole_if_short=True)
    ]


def _record_rejections(root: DataRoot, captions_file: Path, rejected: list[Rejected]) -> None:
    """Malformed rows under ``local:<file>#<line>``. The captions file is read whole every run, so a line an
    earlier run rejected and this one does not is resolved (as are the lines of a file no longer used)."""
    failures = [StatusRecord.failed(_line_id(captions_file, row.line), "catalog", row.reason, row.detail)
                for row in rejected]
    record_catalog_outcomes(root, DATASET, failures, resolved=lambda item_id: bool(_LINE_ID.match(item_id)))


def _line_id(captions_file: Path, line: int) -> str:
    return make_item_id(DATASET, f"{captions_file.name}#{line}")


SOURCE = Source(
    name=DATASET,
    description="Your own folder of audio files, with captions and tags from a CSV or JSONL file.",
    needs="a folder of audio files; ffmpeg for containers libsndfile cannot read (m4a, webm, wma, ...)",
    catalog=catalog,
    acquire=acquire,
    audio_path=audio_path,
    options={
        "path": "folder of audio files (required)",
        "captions": "captions file, CSV or JSONL (default: captions.csv or captions.jsonl in the folder)",
    },
)
