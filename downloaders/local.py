"""``local``: a folder of audio files the user already has, with an optional captions file.

The captions file (option ``captions``; by default ``captions.csv`` or ``captions.jsonl`` in the folder):

* CSV with a header row: ``path`` (required); ``caption`` (one caption) and/or ``captions`` (several,
  separated by ``|``); ``tags`` (separated by ``;`` or ``,``); ``split`` (optional).
* JSONL, one object per line: ``path``; ``caption`` or ``captions`` (a string is one caption, or a list
  of strings); ``tags`` (a list of strings, or one string separated as in CSV); ``split``.

Paths are relative to the folder (absolute paths inside it are accepted too); rows naming the same file
are merged. A malformed row (no path, bad JSON, a path outside the folder, a field of the wrong type, bytes
that are not UTF-8, a CSV field longer than the csv module's 128 KiB limit or another CSV error) is
skipped and recorded as a failed ``catalog`` status record with id ``local:<captions file>#<line>``, the
line the row starts on (a later run that no longer rejects it records it as ok); the rest of the file is
used. A CSV row csv gives up on part-way ends where CSV's quoting says it does, so the rows after it are
read as the rows they are.

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
from typing import Any, TextIO

from downloaders.base import BadRow, Rejected, Source, SourceContext, SourceError, record_catalog_outcomes
from processors.clip import catalog_spans
from processors.decode import probe_duration
from processors.errors import AudioError
from processors.text import clean_captions, clean_tags
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow
from store.settings import Settings
from store.splits import canonical_split
from store.status import StatusRecord

DATASET = "local"
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".mka", ".wma",
     ".aif", ".aiff"}
)
DEFAULT_CAPTIONS = ("captions.csv", "captions.jsonl")
_TAG_SEPARATORS = re.compile(r"[;,]")
_LINE_ID = re.compile(rf"^{DATASET}:.+#\d+$")
_UNDECODED = re.compile("[\udc80-\udcff]")
"""A byte that is not UTF-8, as ``surrogateescape`` decoding leaves it."""
_QUOTED_REST = re.compile(r'(?:[^"]|"")*+"')
"""The rest of a quoted CSV field, through its closing quote (a doubled quote is a quote inside it)."""
_FIELD_END = re.compile(r"[,\r\n]")
"""What ends a CSV field outside quotes."""

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


def _open_text(path: Path, newline: str | None = None) -> TextIO:
    """``path`` as UTF-8 text (a byte order mark dropped) in which a byte that is not UTF-8 becomes a lone
    surrogate rather than an error, so that it costs its own row (:func:`_undecodable`), not the file."""
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline=newline)


def _undecodable(lines: list[str], first: int) -> BadRow | None:
    """Why a row read from ``lines`` (the first numbered ``first``) cannot be used, if it holds a byte that is
    not UTF-8."""
    for number, text in enumerate(lines, start=first):
        found = _UNDECODED.search(text)
        if found is not None:
            where = f"column {found.start() + 1}" if number == first else f"line {number}, column {found.start() + 1}"
            return BadRow("bad_encoding", f"byte 0x{ord(found.group()) - 0xDC00:02X} ({where}) is not UTF-8; the "
                                          "file was probably saved as Latin-1 or Windows-1252: save it as UTF-8")
    return None


class _Lines:
    """A text file's lines as csv reads them, numbered, with those of the row being read kept: to say which
    line a row starts on and to find where a row csv gave up on ends."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self.read = 0
        self.row: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._handle)
        self.read += 1
        self.row.append(line)
        return line

    def next_row(self) -> None:
        self.row = []

    @property
    def first(self) -> int:
        return self.read - len(self.row) + 1


CSV_FIELD_LIMIT = 128 * 1024
"""The csv module's own default, set again before each read: the limit is process-wide, and a library that raises
it (scipy's ARFF reader sets it to the maximum) would otherwise let a runaway quoted field swallow the file."""


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, str] | BadRow]]:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with _open_text(path, newline="") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines)
        header = _csv_header(path, reader)
        while True:
            lines.next_row()
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield lines.first, _unreadable(error, lines)
                _skip_rest_of_row(lines)
                continue
            if cells:
                named = {key: value for key, value in zip(header, cells, strict=False) if key}
                yield lines.first, _undecodable(lines.row, lines.first) or named


def _csv_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    """The header row, which must name a ``path`` column; a file without one is the user's mistake, said once."""
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise SourceError(f"{path}: the header row is unreadable CSV ({error}); fix it") from None
    if "path" not in (header or []):
        raise SourceError(f"{path}: the header row must name a 'path' column (found {header})")
    return header or []


def _unreadable(error: csv.Error, lines: _Lines) -> BadRow:
    """A row csv gave up on: too long a field (its limit is 128 KiB), a NUL byte or another CSV error."""
    runs = f" (the row runs to line {lines.read})" if lines.read > lines.first else ""
    if "field larger than field limit" in str(error):
        return BadRow("field_too_long", f"a field is longer than {CSV_FIELD_LIMIT:,} characters{runs}: a "
                                        "caption that long is a mistake, or a quote opened and never closed; "
                                        "shorten the field or close its quote")
    return BadRow("bad_csv", f"unreadable CSV ({error}){runs}; fix the row")


def _skip_rest_of_row(lines: _Lines) -> None:
    """Read on to where a row csv gave up on really ends. csv starts its next row on the next line, which
    lies inside the row when it gave up within quotes that close lines later: those lines would be read as
    rows of their own."""
    inside = _ends_in_quotes("".join(lines.row))
    while inside:
        line = next(lines, None)
        if line is None:
            return
        inside = _ends_in_quotes(line, inside=True)


def _ends_in_quotes(text: str, *, inside: bool = False) -> bool:
    """Whether CSV (csv's default dialect) is inside a quoted field at the end of ``text``, which starts
    ``inside`` one or at the start of a field."""
    position = 0
    while True:
        if inside:
            closed = _QUOTED_REST.match(text, position)
            if closed is None:
                return True
            position, inside = closed.end(), False
        elif text.startswith('"', position):
            position, inside = position + 1, True
            continue
        end = _FIELD_END.search(text, position)
        if end is None:
            return False
        position = end.end()


def _csv_fields(cells: dict[str, str]) -> dict[str, Any]:
    """``{path, captions, tags, split}``: ``captions`` split on ``|``, ``tags`` on ``;`` and ``,``."""
    captions = [cells.get("caption"), *(cells.get("captions") or "").split("|")]
    tags = _TAG_SEPARATORS.split(cells.get("tags") or "")
    return {"path": cells.get("path"), "captions": captions, "tags": tags, "split": cells.get("split")}


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    with _open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            undecodable = _undecodable([text], number)
            if undecodable is not None:
                yield number, undecodable
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
    try:
        canonical_split(split)
    except ValueError as error:
        raise BadRow("bad_split", f"{error}; fix the row's split or leave it empty") from None
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
            group=make_item_id(DATASET, entry.path),
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
