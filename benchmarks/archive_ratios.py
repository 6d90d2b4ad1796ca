"""Compression ratios of the files our archives hold, against the ``max_compression_ratio`` default (100).

The Million Song Dataset subset (``millionsongsubset.tar.gz``) is the one archive of compressible files:
one HDF5 file per track. This writes a track file as MSD's are laid out (the compound tables of
``tests/published/msd.py``, with 1,024-byte zero-padded strings, and the Echo Nest analysis arrays at their
real lengths for a song of S seconds: a segment every ~0.26 s with 12 pitches and 12 timbre values, two
beats and four tatums a second, values rounded as the Echo Nest published them) and gzips it at level 9,
as ``tar czf`` does. A 240 s song comes out at ~260 KB, the subset's average file. For scale it also
deflates 1 GiB of zeros, the textbook zip bomb. Prints a rich table.

    python benchmarks/archive_ratios.py
"""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from published import msd as published  # noqa: E402

SONG_SECONDS = (10, 60, 240, 600, 1800)
SEGMENT_S = 0.26


def _arrays(group: h5py.Group, rng: np.random.Generator, seconds: float) -> None:
    """The analysis arrays of a song ``seconds`` long, at the Echo Nest's lengths and precisions."""
    segments = int(seconds / SEGMENT_S)
    group.create_dataset("segments_start", data=np.round(np.cumsum(rng.uniform(0.1, 0.5, segments)), 5))
    group.create_dataset("segments_confidence", data=np.round(rng.random(segments), 3))
    group.create_dataset("segments_pitches", data=np.round(rng.random((segments, 12)), 3))
    group.create_dataset("segments_timbre", data=np.round(rng.normal(0, 60, (segments, 12)), 3))
    for name in ("segments_loudness_max", "segments_loudness_start"):
        group.create_dataset(name, data=np.round(rng.uniform(-60, 0, segments), 3))
    group.create_dataset("segments_loudness_max_time", data=np.round(rng.uniform(0, 0.3, segments), 5))
    beats = int(seconds * 2)
    for name, count in (("beats", beats), ("tatums", 2 * beats), ("bars", beats // 4),
                        ("sections", max(1, int(seconds / 25)))):
        group.create_dataset(f"{name}_start", data=np.round(np.cumsum(rng.uniform(0.2, 0.6, count)), 5))
        group.create_dataset(f"{name}_confidence", data=np.round(rng.random(count), 3))


def track_file(seconds: float, rng: np.random.Generator) -> bytes:
    """One MSD track file for a song ``seconds`` long."""
    song = published.songs()[0]
    terms = [f"term {index}".encode() for index in range(int(rng.integers(20, 40)))]
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        metadata = handle.create_group("metadata")
        metadata.create_dataset("songs", data=published._row(published._METADATA, {
            "artist_name": song.artist, "title": song.title, "release": song.release,
            "artist_location": "London, England", "song_id": song.song_id, "artist_id": song.artist_id}))
        metadata.create_dataset("artist_terms", data=np.array(terms))
        metadata.create_dataset("artist_terms_freq", data=np.round(rng.random(len(terms)), 6))
        metadata.create_dataset("artist_terms_weight", data=np.round(rng.random(len(terms)), 6))
        similar = [f"AR{value:016X}".encode() for value in rng.integers(0, 2**60, 100)]
        metadata.create_dataset("similar_artists", data=np.array(similar))
        analysis = handle.create_group("analysis")
        analysis.create_dataset("songs", data=published._row(published._ANALYSIS, {
            "track_id": song.track_id, "duration": seconds}))
        _arrays(analysis, rng, seconds)
        musicbrainz = handle.create_group("musicbrainz")
        musicbrainz.create_dataset("songs", data=published._row(published._MUSICBRAINZ, {"year": 1999}))
        musicbrainz.create_dataset("artist_mbtags", data=np.array([b"rock", b"british"]))
        musicbrainz.create_dataset("artist_mbtags_count", data=np.array([3, 1], dtype="<i4"))
    return buffer.getvalue()


def zeros_deflated(mib: int) -> int:
    """Bytes that ``mib`` MiB of zeros deflate to (zip's default level)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    block = bytes(1 << 20)
    return sum(len(packer.compress(block)) for _ in range(mib)) + len(packer.flush())


def main() -> None:
    rng = np.random.default_rng(0)
    table = Table(title="Compression ratios (max_compression_ratio defaults to 100)")
    for column in ("file", "bytes", "compressed", "ratio"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for seconds in SONG_SECONDS:
        data = track_file(seconds, rng)
        packed = len(gzip.compress(data, 9))
        table.add_row(f"MSD track file, {seconds} s song (gzip -9)", f"{len(data):,}", f"{packed:,}",
                      f"{len(data) / packed:.2f}")
    packed = zeros_deflated(1024)
    table.add_row("1 GiB of zeros (deflate), a zip bomb", f"{1 << 30:,}", f"{packed:,}", f"{(1 << 30) / packed:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
