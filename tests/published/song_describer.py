"""A small Song Describer Dataset in its published layout, for the loopback mirror.

What the real dataset has (datasets notes, section 8) and this copy reproduces: Zenodo record 10072001's JSON
(``files`` with ``key``, ``size``, ``checksum`` ``md5:<hex>`` and ``links.self`` naming zenodo.org, as a saved
copy would) and its files under ``/api/records/10072001/files/<key>/content``: ``song_describer.csv`` as pandas'
``to_csv(index=False)`` writes the authors' frame (csv quoting with ``\\n`` line ends, booleans ``True``/
``False`` and empty for None, rows sorted by track only so caption ids are out of order within a track, a
caption with a quoted line break, non-ASCII text), ``audio_licenses.txt`` in MTG-Jamendo's block layout (one
track left out), and ``audio.zip`` with folder entries ``audio/`` and ``audio/NN/``, then
``audio/NN/<track id>.2min.mp3`` (deflate, Unix attributes).

Tracks 3301 and 134799 are also in :mod:`published.mtg_jamendo` (split-0 ``test`` there, as every SDD track
is), with the same artist, album and duration: twins across the two fixtures. The excerpts are 2–3.5 s stereo
44.1 kHz MP3s (FMA's fixture's; the real ones are two minutes at 320 kbps), while ``duration`` keeps the whole
track's length as the real column does.

Variants: ``malformed`` (rows the catalog must reject: bytes that are not UTF-8, a path climbing out, an
empty caption as a track's only one, a validity flag that is not a boolean, a row short of cells; see
:attr:`Published.rejected`), ``hostile`` (track 1004034's member is a symlink out of the folder; track
48800's member is stored only under a name that climbs out with ``..``), ``bad_mp3`` (track 1350001's member
is an HTML page), ``truncated`` (the zip is cut short and the record's md5 and size are over the cut file, as
a broken upload would be).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import stat
import zipfile
from dataclasses import dataclass
from typing import Any

from downloaders.song_describer import AUDIO_ZIP, CSV, HOST, LICENSES, RECORD
from published.fma import mp3_bytes

DATE_TIME = (2023, 11, 6, 12, 0, 0)
HEADER = ["caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "artist_id", "album_id", "path",
          "duration"]


@dataclass(frozen=True)
class Caption:
    caption_id: int
    text: str
    valid: bool | None
    """``None`` is written as an empty cell (nobody validated the caption)."""
    familiarity: int


@dataclass(frozen=True)
class Track:
    number: int
    artist: int
    album: int
    duration_s: float
    """The whole track's length, as the real ``duration`` column has it."""
    captions: tuple[Caption, ...]
    """In the order the CSV lists them (not by caption id)."""
    seconds: float
    """Length of the excerpt published here."""
    license: str | None
    """Licence path under creativecommons.org/licenses/ in ``audio_licenses.txt``; ``None``: no block."""

    @property
    def path(self) -> str:
        """The CSV's ``path``: MTG-Jamendo's ``NN/<id>.mp3`` with ``NN`` = id % 100."""
        return f"{self.number % 100:02d}/{self.number}.mp3"

    @property
    def member(self) -> str:
        """The excerpt's name in ``audio.zip``."""
        return f"audio/{self.path.removesuffix('.mp3')}.2min.mp3"

    def row(self, caption: Caption) -> list[str]:
        valid = "" if caption.valid is None else str(caption.valid)
        return [str(caption.caption_id), str(self.number), caption.text, valid, str(caption.familiarity),
                str(self.artist), str(self.album), self.path, repr(self.duration_s)]

    def valid_captions(self) -> list[Caption]:
        return sorted((c for c in self.captions if c.valid), key=lambda c: c.caption_id)


TRACKS = (
    Track(3301, 517, 521, 11.5, (Caption(1203, "A calm, melodic piano piece with soft strings.", True, 2),
                                 Caption(88, 'Dreamy ambient track; "lo-fi" textures\nand a slow pulse.', False, 4)),
          2.0, "by-sa/3.0"),
    Track(48800, 1200, 4400, 95.0, (Caption(505, "Heavy metal riff, distorted guitars, double-kick drums.", False,
                                            2),), 2.25, "by/3.0"),
    Track(134799, 338149, 19244, 6.5, (Caption(301, "Sad acoustic guitar ballad with a male voice.", True, 1),),
          2.5, "by-nc-sa/3.0"),
    Track(245103, 31, 32, 180.0, (Caption(641, "Laid-back jazz; 日本語のキャプション too.", True, 2),
                                  Caption(640, "Jazz trio with brushed drums, walking bass and piano comping.", True,
                                          3)), 2.75, "by-nc-nd/3.0"),
    Track(1004034, 368880, 118196, 202.5, (Caption(859, "Upbeat electro-pop with bright synths.", True, 0),
                                           Caption(860, "Danceable track, café vibes, “smooth” bass.", None, 3),
                                           Caption(12, "   Energetic   pop, loud  ", True, 5)), 3.0, "by-nc-sa/3.0"),
    Track(1100059, 41, 42, 150.25, (Caption(990, "Chiptune melody over an arpeggiated bass.", True, 4),), 3.25,
          None),
    Track(1350001, 7, 8, 340.1, (Caption(77, "Solo cello, slow and mournful.", None, 1),), 3.5, "by-nd/3.0"),
)
"""Sorted by track id, as ``create_dataset.py`` sorts the frame."""
HOSTILE_LINK, HOSTILE_CLIMB, BAD_MP3 = 1004034, 48800, 1350001
EMPTY_ONLY_TRACK = 7777
"""With ``malformed``: a track whose only caption is empty, so it has no item at all."""
HTML_PAGE = b"<!DOCTYPE html><html><body>Zenodo is under maintenance.</body></html>\n"


@dataclass
class Published:
    record: bytes
    """The record's JSON, as ``/api/records/10072001`` answers."""
    files: dict[str, bytes]
    """Record key → bytes."""
    tracks: tuple[Track, ...]
    members: dict[str, bytes]
    """Each track's excerpt as published, by member name."""
    rejected: dict[int, str]
    """Line (where the row starts) → reason, for each malformed row written on purpose."""

    def track(self, number: int) -> Track:
        return next(track for track in self.tracks if track.number == number)

    def url_path(self, key: str) -> str:
        """Where the mirror serves ``key`` (the path the source requests)."""
        return f"/{HOST}/api/records/{RECORD}/files/{key}/content"


def captions_csv(tracks: tuple[Track, ...], *, malformed: bool) -> tuple[bytes, dict[int, str]]:
    """The CSV and the lines of its malformed rows. Text that is not UTF-8 is written with surrogate escapes,
    so that its bytes come out as they are."""
    rows: list[tuple[list[str], str | None]] = [(track.row(c), None) for track in tracks for c in track.captions]
    if malformed:
        rows[4:4] = _malformed_rows()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    rejected = {}
    for cells, reason in rows:
        line = buffer.getvalue().count("\n") + 1
        writer.writerow(cells)
        if reason:
            rejected[line] = reason
    return buffer.getvalue().encode("utf-8", errors="surrogateescape"), rejected


def _malformed_rows() -> list[tuple[list[str], str]]:
    jazz, chiptune = TRACKS[3], TRACKS[5]
    empty = Track(EMPTY_ONLY_TRACK, 1, 2, 100.0, (Caption(4000, "  ", True, 1),), 2.0, None)
    climbing = chiptune.row(Caption(4002, "Escapes.", True, 2))
    climbing[HEADER.index("path")] = "../../etc/passwd"
    unsure = jazz.row(Caption(4003, "Maybe valid.", True, 2))
    unsure[HEADER.index("is_valid_subset")] = "maybe"
    return [
        (jazz.row(Caption(4001, "Caf\udce9 jazz in Latin-1", True, 2)), "bad_encoding"),
        (climbing, "bad_path"),
        (empty.row(empty.captions[0]), "empty_caption"),
        (unsure, "bad_valid_flag"),
        (chiptune.row(Caption(4004, "Short row.", True, 1))[:5], "bad_columns"),
    ]


def licenses_txt(tracks: tuple[Track, ...]) -> bytes:
    """MTG-Jamendo's ``audio_licenses.txt`` layout: path, Jamendo line, licence line, blank line."""
    blocks = [f"{t.path}\nTrack {t.number} by Artist {t.artist} from Jamendo: http://www.jamendo.com/track/"
              f"{t.number}\nAvailable under a Creative Commons license: http://creativecommons.org/licenses/"
              f"{t.license}/\n\n" for t in tracks if t.license]
    return "".join(blocks).encode()


def zip_bytes(members: dict[str, bytes], *, link: str | None = None, climb: str | None = None) -> bytes:
    """``audio/`` and ``audio/NN/`` folder entries, then the members in name order; ``link`` is written as
    a symlink out of the folder, ``climb`` only under a name that climbs out of it."""
    buffer = io.BytesIO()
    folders = sorted({"audio/", *(name.rsplit("/", 1)[0] + "/" for name in members)})
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in folders:
            info = zipfile.ZipInfo(folder, date_time=DATE_TIME)
            info.create_system, info.external_attr = 3, (stat.S_IFDIR | 0o755) << 16 | 0x10
            archive.writestr(info, b"")
        for name in sorted(members):
            stored = f"audio/{name.split('/')[1]}/../../../escape/{name.rsplit('/', 1)[1]}" if name == climb else name
            info = zipfile.ZipInfo(stored, date_time=DATE_TIME)
            info.create_system, info.compress_type = 3, zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            data = members[name]
            if name == link:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                data = b"../../../../outside.mp3"
            archive.writestr(info, data)
    return buffer.getvalue()


def record_json(files: dict[str, bytes]) -> bytes:
    """The record as Zenodo's API answers it (the fields the source reads, and a few around them)."""
    entries = [{"id": hashlib.md5(key.encode()).hexdigest(), "key": key, "size": len(data),
                "checksum": f"md5:{hashlib.md5(data).hexdigest()}",
                "links": {"self": f"https://zenodo.org/api/records/{RECORD}/files/{key}/content"}}
               for key, data in files.items()]
    record = {"id": int(RECORD), "doi": f"10.5281/zenodo.{RECORD}", "created": "2023-11-06T12:00:00+00:00",
              "metadata": {"title": "The Song Describer Dataset", "version": "1.0.0",
                           "license": {"id": "cc-by-sa-4.0"}},
              "files": entries, "links": {"self": f"https://zenodo.org/api/records/{RECORD}"}}
    return json.dumps(record, indent=2).encode()


def build(*, malformed: bool = False, hostile: bool = False, bad_mp3: bool = False,
          truncated: bool = False) -> Published:
    members = {t.member: mp3_bytes(t.seconds, 220.0 + 45 * index) for index, t in enumerate(TRACKS)}
    inside = dict(members)
    if bad_mp3:
        inside[next(t.member for t in TRACKS if t.number == BAD_MP3)] = HTML_PAGE
    link = next(t.member for t in TRACKS if t.number == HOSTILE_LINK) if hostile else None
    climb = next(t.member for t in TRACKS if t.number == HOSTILE_CLIMB) if hostile else None
    archive = zip_bytes(inside, link=link, climb=climb)
    if truncated:
        archive = archive[: len(archive) * 2 // 3]
    table, rejected = captions_csv(TRACKS, malformed=malformed)
    files = {CSV: table, LICENSES: licenses_txt(TRACKS), AUDIO_ZIP: archive}
    return Published(record_json(files), files, TRACKS, members, rejected)


def serve(mirror: Any, published: Published) -> dict[str, str]:
    """Put the record and its files on the mirror under ``/zenodo/``; returns the ``mirrors`` entry that points
    the ``zenodo`` host key there."""
    mirror.add(f"/{HOST}/api/records/{RECORD}", published.record, content_type="application/json")
    for key, data in published.files.items():
        mirror.add(published.url_path(key), data)
    return {HOST: f"{mirror.base_url}/{HOST}"}
