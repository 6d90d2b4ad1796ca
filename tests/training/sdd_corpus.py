"""A Song Describer–shaped benchmark and its MTG-Jamendo twins, written beside the training corpus (:mod:`corpus`)
with the same word vectors, so a head trained on the corpus finds the benchmark's tracks.

* ``sdd``: :data:`SDD_TRACKS` whole tracks as the ``song_describer`` source catalogues them: split ``test``, held
  out, group ``jamendo:<n>``, one to three captions each with ``extra.is_valid_subset`` (one flag per caption;
  every third track has no validated caption);
* ``twins``: captioned training rows (split ``train``) of other recordings, and of the first :data:`TWINS` SDD
  tracks under the same group, as MTG-Jamendo's rows of SDD's tracks are. :data:`NO_VECTOR` has no vector.
"""

from __future__ import annotations

import itertools

import numpy as np
from corpus import GENRES, INSTRUMENTS, MODEL, MOODS, Track, audio_vector, word_vectors, write_shards

from store.layout import DataRoot
from store.manifest import ManifestRow, canonical_row, write_manifest

SDD = "sdd"
TWINS_DATASET = "twins"
SDD_TRACKS = 12
TWINS = 3
OTHERS = 6
NO_VECTOR = "sdd:1011"


def sdd_group(number: int) -> str:
    return f"jamendo:{number}"


def sdd_tracks(seed: int = 7) -> list[Track]:
    triples = list(itertools.product(GENRES, INSTRUMENTS, MOODS))
    chosen = np.random.default_rng(seed).choice(len(triples), size=SDD_TRACKS + OTHERS, replace=False)
    return [Track(*triples[i]) for i in chosen]


def captions_of(number: int, track: Track) -> tuple[tuple[str, ...], list[bool]]:
    """One to three captions, and which of them are validated (none for every third track)."""
    texts = (*track.captions(), f"{track.instrument.capitalize()} over {track.genre}, {track.mood}.")
    count = 1 + number % 3
    return texts[:count], [number % 3 != 2 and index == 0 for index in range(count)]


def write_twins(root: DataRoot, *, seed: int = 0, model: str = MODEL) -> None:
    """The ``twins`` training dataset (its catalogue comes before SDD's in the tests)."""
    tracks = sdd_tracks()
    numbered = [(1000 + i, track) for i, track in enumerate(tracks[:TWINS])]
    numbered += [(2000 + i, track) for i, track in enumerate(tracks[SDD_TRACKS:])]
    rows = [canonical_row(ManifestRow(item_id=f"{TWINS_DATASET}:{n}", dataset=TWINS_DATASET, source=f"{n}.mp3",
                                      split="train", captions=track.captions(), group=sdd_group(n)))
            for n, track in numbered]
    _write(root, TWINS_DATASET, rows, [track for _, track in numbered], seed, model)


def write_sdd(root: DataRoot, *, seed: int = 0, model: str = MODEL) -> list[ManifestRow]:
    """The ``sdd`` benchmark; returns its rows."""
    tracks = sdd_tracks()[:SDD_TRACKS]
    rows = []
    for index, track in enumerate(tracks):
        number = 1000 + index
        texts, valid = captions_of(index, track)
        rows.append(canonical_row(ManifestRow(
            item_id=f"{SDD}:{number}", dataset=SDD, source=f"audio/{number % 100:02d}/{number}.2min.mp3",
            split="test", captions=texts, group=sdd_group(number), held_out=True,
            extra=ManifestRow.encode_extra({"is_valid_subset": valid}))))
    _write(root, SDD, rows, tracks, seed, model)
    return rows


def _write(root: DataRoot, dataset: str, rows: list[ManifestRow], tracks: list[Track], seed: int, model: str) -> None:
    write_manifest(root.manifest(dataset), rows)
    rng = np.random.default_rng(seed)
    words = word_vectors(rng, model)
    vectors = {row.item_id: audio_vector(track, words, rng) for row, track in zip(rows, tracks, strict=True)}
    write_shards(root, dataset, {k: v for k, v in vectors.items() if k != NO_VECTOR}, model)
