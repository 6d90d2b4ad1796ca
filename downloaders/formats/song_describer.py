"""The Song Describer Dataset's published metadata: the Zenodo record, ``song_describer.csv`` and
``audio_licenses.txt`` (pure functions, no network).

The record (``/api/records/<id>``) lists the files as ``files: [{key, size, checksum: "md5:<hex>", links:
{self}}]``; the md5 and size are what every download is checked against. InvenioRDM's own form (``files:
{entries: {<key>: {...}}}``) is read too, so a mirror that saved the record either way works.

``song_describer.csv`` is what the authors' ``scripts/create_dataset.py`` writes with pandas'
``to_csv(index=False)``: the header ``caption_id,track_id,caption,is_valid_subset,familiarity,artist_id,
album_id,path,duration``, one row per caption, rows sorted by track only (so a track's captions come in no
particular order), a caption quoted when it holds a comma, a quote or a line break (a quoted caption may span
lines). ``is_valid_subset`` is ``True``, ``False`` or empty: the validators' -1/0/1 mapped to False/None/True,
and empty for a caption nobody judged; empty counts as not validated, as the authors' own statistics do.
``familiarity`` is the annotator's 0–5 rating. ``artist_id``, ``album_id``, ``path`` (``NN/<track id>.mp3``,
``NN`` = track id % 100) and ``duration`` (seconds of the *whole* track) are copied from MTG-Jamendo; the
audio itself is the track's first two minutes, ``audio/NN/<track id>.2min.mp3`` in ``audio.zip``.

A row that cannot be used (not UTF-8, a wrong number of cells, an empty caption, a path that is not
``NN/<track id>.mp3``, ...) is returned as a :class:`Rejected` with the line it starts on; the rest of the
file is still read.

``audio_licenses.txt`` is read as MTG-Jamendo's file of the same name is written: a block per track, its
path on the first line, then lines that name the Jamendo page and the Creative Commons licence's URL.
UNVERIFIED for this record (the file's exact lines were not seen): a track whose block cannot be read simply
has no licence of its own, and the caller falls back to the dataset's general statement.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from downloaders.base import BadRow, Rejected
from downloaders.formats import FormatError
from processors.text import clean_caption

COLUMNS = ("caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "artist_id", "album_id",
           "path", "duration")
FLAGS = {"True": True, "False": False, "": False}
"""``is_valid_subset`` as pandas writes True/False/None."""
FAMILIARITY = range(0, 6)
_PATH = re.compile(r"^(?P<folder>\d{2})/(?P<stem>\d+)\.mp3$")
_MD5 = re.compile(r"^md5:(?P<hex>[0-9a-f]{32})$")
_LICENSE_PATH = re.compile(r"^(?:audio/)?\d{2}/(?P<track>\d+)(?:\.2min)?\.mp3$")
_CC_URL = re.compile(r"https?://creativecommons\.org/licenses/(?P<kind>[a-z-]+)/(?P<version>[\d.]+)/?")
_SHOWN = 60


@dataclass(frozen=True)
class RecordFile:
    """One file of the Zenodo record: what its download must be."""

    key: str
    size: int
    md5: str


@dataclass(frozen=True)
class Caption:
    caption_id: int
    text: str
    valid: bool
    """In the validated subset (``is_valid_subset`` True; empty counts as False)."""
    familiarity: int | None


@dataclass(frozen=True)
class Track:
    track_id: int
    artist_id: int
    album_id: int
    path: str
    """``34/1004034.mp3`` as the CSV writes it: MTG-Jamendo's path of the whole track."""
    duration_s: float
    """The whole track's length (from MTG-Jamendo), not the two minutes published."""
    captions: tuple[Caption, ...]
    """Ordered by ``caption_id``."""

    @property
    def member(self) -> str:
        """The track's file in ``audio.zip``: ``audio/34/1004034.2min.mp3`` for the path ``34/1004034.mp3``."""
        return f"audio/{self.path.removesuffix('.mp3')}.2min.mp3"

    def validated(self) -> Track:
        """The track with only its validated captions (none left: the validated subset lacks it)."""
        return replace(self, captions=tuple(caption for caption in self.captions if caption.valid))


def read_record(data: bytes, record_id: str) -> dict[str, RecordFile]:
    """``key → RecordFile`` from the record's JSON; a :class:`FormatError` for anything else (an error page,
    another record, a file without its md5)."""
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise FormatError(f"record {record_id}: the answer is not JSON ({data[:_SHOWN]!r}...)") from None
    if not isinstance(record, dict) or str(record.get("id")) != record_id:
        found = record.get("id") if isinstance(record, dict) else type(record).__name__
        raise FormatError(f"record {record_id}: the JSON describes record {found!r}, not {record_id}")
    files = record.get("files")
    if isinstance(files, dict):
        files = list((files.get("entries") or {}).values())
    if not isinstance(files, list) or not files:
        raise FormatError(f"record {record_id}: the JSON lists no files")
    listed = [_record_file(entry, record_id) for entry in files]
    return {file.key: file for file in listed}


def _record_file(entry: Any, record_id: str) -> RecordFile:
    fields = entry if isinstance(entry, dict) else {}
    key, size = fields.get("key"), fields.get("size")
    match = _MD5.match(str(fields.get("checksum", "")).lower())
    if not isinstance(key, str) or type(size) is not int or size < 0 or match is None:
        raise FormatError(f"record {record_id}: a file entry lacks its key, size or md5 checksum: "
                          f"{str(entry)[:120]}")
    return RecordFile(key, size, match["hex"])


def read_tracks(data: bytes, name: str) -> tuple[list[Track], list[Rejected]]:
    """The tracks of ``song_describer.csv`` in track id order, each with its usable captions, and the rows
    that are not usable, with the line each starts on."""
    lines = _lines(data.decode("utf-8-sig", errors="surrogateescape"), name)
    columns = _columns(next(lines, (1, None))[1], name)
    rows: dict[int, list[tuple[Track, Caption]]] = {}
    seen: set[int] = set()
    rejected: list[Rejected] = []
    for line, cells in lines:
        try:
            track, caption = _row(cells, columns)
            if caption.caption_id in seen:
                raise BadRow("duplicate_caption_id", f"caption_id {caption.caption_id} is on an earlier line too")
        except BadRow as bad:
            rejected.append(Rejected.at(name, line, bad))
            continue
        seen.add(caption.caption_id)
        rows.setdefault(track.track_id, []).append((track, caption))
    return [_track(rows[track_id]) for track_id in sorted(rows)], rejected


def read_licenses(data: bytes) -> dict[int, str]:
    """Track id → its licence, ``CC BY-NC-SA 3.0 (<url>)``, for every block that names a track and a Creative
    Commons licence URL; lines of any other shape are passed over (see the module docstring)."""
    licenses: dict[int, str] = {}
    track: int | None = None
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if path := _LICENSE_PATH.match(line):
            track = int(path["track"])
        elif track is not None and (url := _CC_URL.search(line)):
            licenses[track] = f"CC {url['kind'].upper()} {url['version']} ({url[0]})"
            track = None
    return licenses


def _columns(header: list[str] | None, name: str) -> dict[str, int]:
    found = [cell.strip() for cell in header or []]
    missing = [column for column in COLUMNS if column not in found]
    if missing:
        raise FormatError(f"{name}: the header lacks {', '.join(missing)} (found {','.join(found)[:120]!r}); "
                          "the file is not the Song Describer Dataset's caption table")
    return {column: index for index, column in enumerate(found)}


def _lines(text: str, name: str) -> Iterator[tuple[int, list[str]]]:
    """The non-blank rows of the CSV with the line each starts on (a quoted caption may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield start, cells
            start = reader.line_num + 1
    except csv.Error as error:
        raise FormatError(f"{name} line {start}: unreadable CSV ({error}); the file is damaged") from None


def _row(cells: list[str], columns: dict[str, int]) -> tuple[Track, Caption]:
    """One caption row as a one-caption track; :class:`BadRow` says what is wrong with it."""
    width = max(columns.values()) + 1
    if len(cells) != width:
        raise BadRow("bad_columns", f"has {len(cells)} cells, the header {width}")
    undecodable = [column for column, index in columns.items() if _is_surrogate(cells[index])]
    if undecodable:
        raw = cells[columns[undecodable[0]]].encode("utf-8", errors="surrogateescape")
        raise BadRow("bad_encoding", f"{undecodable[0]} is not UTF-8 text ({raw[:_SHOWN]!r})")
    cell = {column: cells[index].strip() for column, index in columns.items()}
    caption_id = _whole(cell, "caption_id")
    track_id = _whole(cell, "track_id")
    text = clean_caption(cell["caption"])
    if not text:
        raise BadRow("empty_caption", f"caption {caption_id} of track {track_id} is empty")
    if cell["is_valid_subset"] not in FLAGS:
        raise BadRow("bad_valid_flag", f"is_valid_subset {cell['is_valid_subset'][:_SHOWN]!r} of caption "
                                       f"{caption_id} is not True, False or empty")
    track = Track(track_id, _whole(cell, "artist_id"), _whole(cell, "album_id"), _path(cell["path"], track_id),
                  _seconds(cell["duration"], track_id), ())
    return track, Caption(caption_id, text, FLAGS[cell["is_valid_subset"]], _familiarity(cell, caption_id))


def _is_surrogate(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def _whole(cell: dict[str, str], column: str) -> int:
    if not cell[column].isdigit():
        raise BadRow(f"bad_{column}", f"{column} {cell[column][:_SHOWN]!r} is not a whole number")
    return int(cell[column])


def _familiarity(cell: dict[str, str], caption_id: int) -> int | None:
    """0–5, or ``None`` when empty. pandas writes ``3.0`` for a column that has empty cells."""
    value = cell["familiarity"]
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number.is_integer() or int(number) not in FAMILIARITY:
        raise BadRow("bad_familiarity", f"familiarity {value[:_SHOWN]!r} of caption {caption_id} is not 0 to 5")
    return int(number)


def _path(path: str, track_id: int) -> str:
    """``NN/<track id>.mp3`` with ``NN`` = track id % 100, the only shape whose zip member is known."""
    match = _PATH.match(path)
    if match is None or int(match["stem"]) != track_id or int(match["folder"]) != track_id % 100:
        raise BadRow("bad_path", f"path {path[:_SHOWN]!r} of track {track_id} is not "
                                 f"{track_id % 100:02d}/{track_id}.mp3")
    return path


def _seconds(text: str, track_id: int) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadRow("bad_duration", f"duration {text[:_SHOWN]!r} of track {track_id} is not a positive number "
                                     "of seconds")
    return seconds


def _track(rows: list[tuple[Track, Caption]]) -> Track:
    """One track from its caption rows: the track's fields from its first row, its captions by id."""
    captions = sorted((caption for _, caption in rows), key=lambda caption: caption.caption_id)
    return replace(rows[0][0], captions=tuple(captions))
