"""MTG-Jamendo's published metadata: the track TSVs and the sha256 lists (pure functions, no network).

A track TSV (``data/<subset>.tsv`` and ``data/splits/split-N/<subset>-<part>.tsv``) is tab-separated with
the header ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``; the TAGS column spills into as many extra
columns as the track has tags, each ``category---tag`` (e.g. ``mood/theme---happy``). The files were
written by Python's csv module, so lines end in CRLF. PATH (``48/948.mp3``) names the folder ``NN`` that is
also the number of the tar holding the track; the ``audio-low`` tars name the same file ``48/948.low.mp3``.

The checksum lists (``data/download/<dataset>_<type>_sha256_{tars,tracks}.txt``) are ``<sha256> <name>``
lines. Rows that cannot be used are returned as :class:`Rejected`, never silently dropped.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass

from downloaders.base import BadRow, Rejected
from downloaders.formats import FormatError

HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")
TAG_SEPARATOR = "---"
_TRACK_ID = re.compile(r"^track_\d+$")
_PATH = re.compile(r"^(?P<folder>\d{2})/(?P<stem>\d+)\.mp3$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def jamendo_group(track: str | int) -> str:
    """The manifest group of a Jamendo recording, ``jamendo:<number>``, from MTG-Jamendo's ``track_0000948`` or
    the bare number other datasets use (the Song Describer Dataset's ``track_id``), so both name one group."""
    number = str(track).removeprefix("track_")
    if not number.isdigit():
        raise ValueError(f"{track!r} is not a Jamendo track id (track_<digits> or <digits>)")
    return f"jamendo:{int(number)}"


@dataclass(frozen=True)
class Track:
    track_id: str
    """``track_0000948``: the id the dataset uses everywhere."""
    artist_id: str
    album_id: str
    path: str
    """``48/948.mp3``: folder ``48`` is also the number of the tar that holds the track."""
    duration_s: float
    tags: tuple[tuple[str, str], ...]
    """``(category, tag)`` pairs in file order; the category is ``""`` for a tag written without one."""

    @property
    def archive_index(self) -> str:
        return self.path.split("/", 1)[0]

    def member(self, audio_type: str) -> str:
        """The track's name inside its tar: ``audio-low`` tars hold ``NN/<id>.low.mp3``."""
        return self.path[: -len(".mp3")] + ".low.mp3" if audio_type == "audio-low" else self.path


def read_tracks(data: bytes, name: str) -> tuple[list[Track], list[Rejected]]:
    """The usable tracks of a TSV in file order, and the rows that are not, with the line they are on."""
    rows = csv.reader(io.StringIO(_text(data, name), newline=""), delimiter="\t")
    header = next(rows, None)
    if header is None or tuple(cell.strip() for cell in header[: len(HEADER)]) != HEADER:
        shown = "\\t".join(header or [])[:120]
        raise FormatError(
            f"{name}: the first line must be the header {' '.join(HEADER)} TAGS (tab-separated), found "
            f"{shown!r}; the file is not an MTG-Jamendo track list (a git symlink fetched as text?)"
        )
    tracks, rejected = [], []
    for cells in rows:
        line = rows.line_num
        if not any(cell.strip() for cell in cells):
            continue
        try:
            tracks.append(_track([cell.strip() for cell in cells]))
        except BadRow as bad:
            rejected.append(Rejected.at(name, line, bad))
    return tracks, rejected


def read_checksums(data: bytes, name: str) -> dict[str, str]:
    """``name → sha256`` from a ``<sha256> <name>`` list (any run of blanks between the two)."""
    sums: dict[str, str] = {}
    for number, line in enumerate(_text(data, name).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not _SHA256.match(parts[0].lower()):
            raise FormatError(f"{name} line {number}: expected '<sha256> <file name>', found {line[:120]!r}")
        sums[parts[1].strip()] = parts[0].lower()
    return sums


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FormatError(f"{name} is not UTF-8 text ({error}); the copy is damaged or wrong") from None


def _track(cells: list[str]) -> Track:
    if len(cells) < len(HEADER):
        raise BadRow("missing_columns", f"has {len(cells)} columns, a track needs at least {len(HEADER)}")
    track_id, artist_id, album_id, path, duration = cells[: len(HEADER)]
    if not _TRACK_ID.match(track_id):
        raise BadRow("bad_track_id", f"TRACK_ID {track_id!r} is not of the form track_<digits>")
    if not _PATH.match(path):
        raise BadRow("bad_path", f"PATH {path!r} of {track_id} is not of the form NN/<digits>.mp3")
    try:
        seconds = float(duration)
    except ValueError:
        raise BadRow("bad_duration", f"DURATION {duration!r} of {track_id} is not a number") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadRow("bad_duration",
                     f"DURATION {duration!r} of {track_id} is not a positive number of seconds")
    tags = tuple(_tag(cell) for cell in cells[len(HEADER):] if cell)
    return Track(track_id, artist_id, album_id, path, seconds, tags)


def _tag(cell: str) -> tuple[str, str]:
    category, separator, tag = cell.partition(TAG_SEPARATOR)
    return (category, tag) if separator else ("", cell)
