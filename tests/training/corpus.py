"""A small real training corpus: Parquet manifests and HDF5 shards under a data root, as the pipeline writes them.

Each track is a (genre, instrument, mood) triple. Its clips' audio vectors are the real enrichment
(:func:`embedders.enrichment.enrich`) of frames made from one fixed random vector per word, a third of the
frames each, plus a little noise per clip: a fixed random projection of the words of the track's text, so a
text embedder can learn text → audio, and clips of one track are near each other but not identical.

Three datasets, shaped like the real sources:

* ``captioned``: two clips per track (``@0``, ``@10``), two captions each, official ``train``/``valid``/``test``
  splits (one track has a ``train`` clip and a ``test`` clip: the whole track must be held out); its vectors
  are spread over two shards;
* ``tagged``: tags only, no split, ``extra.group`` naming the song (clips ``@0``, ``@15``);
* ``bench``: MusicBench-like whole files with captions and split ``train``; a quarter are flagged
  ``is_audioset_eval_mcaps`` and a few are split ``test_a``.

Two rows of ``captioned`` have no vector (``NO_VECTOR``) and one row of ``tagged`` has no text (``NO_TEXT``).
With ``official_splits=False`` no row has a split or flag, so every group is hashed.

The shards are ``dsp``'s (``MODEL``) by default, or another embedder's (``model=``), in that model's space and
size (``DIM`` for ``dsp``) and where the embed flow puts them (``embeddings/<space>/<model>/<dataset>``), so
the train flow, search and the service, which look the model's space and size up in its spec, take them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedders import embedder_spec
from embedders.enrichment import ENRICHMENT, enrich
from store.layout import DataRoot
from store.manifest import ManifestRow, canonical_row, write_manifest
from store.shards import ShardAttributes, ShardWriter
from training.config import TrainConfig

MODEL = "dsp"
SPACE = embedder_spec(MODEL).space
DIM = embedder_spec(MODEL).stored_dim
DATASETS = ("captioned", "tagged", "bench")
GENRES = ("rock", "jazz", "techno", "reggae", "classical", "country", "metal", "funk")
INSTRUMENTS = ("piano", "violin", "trumpet", "drums", "flute", "harp", "banjo", "saxophone")
MOODS = ("calm", "angry", "happy", "dreamy", "dark", "playful")
FRAMES_PER_WORD = 4
NO_VECTOR = ("captioned:t000@10", "captioned:t001@10")
NO_TEXT = "tagged:s000@15"
MIXED_SPLIT_GROUP = "captioned:t002"
"""Its ``@0`` clip is official ``train``, its ``@10`` clip ``test``."""


@dataclass(frozen=True)
class Track:
    genre: str
    instrument: str
    mood: str

    @property
    def words(self) -> tuple[str, str, str]:
        return (self.genre, self.instrument, self.mood)

    def captions(self) -> tuple[str, ...]:
        return (f"A {self.mood} {self.genre} song featuring {self.instrument}.",
                f"{self.genre.capitalize()} music played on {self.instrument}, with a {self.mood} feel.")


@dataclass(frozen=True)
class Corpus:
    root: DataRoot
    rows: dict[str, list[ManifestRow]]

    @property
    def datasets(self) -> tuple[str, ...]:
        return DATASETS


def build_corpus(path: Path, *, tracks: int = 8, official_splits: bool = True, seed: int = 0,
                 model: str = MODEL) -> Corpus:
    """Write the corpus under ``path`` (the data root): ``tracks`` tracks per dataset, distinct triples, as
    ``model``'s shards (a data root may hold several models' corpora: the manifests are the same)."""
    rng = np.random.default_rng(seed)
    words = word_vectors(rng, model)
    triples = list(itertools.product(GENRES, INSTRUMENTS, MOODS))
    chosen = [Track(*triples[i]) for i in rng.choice(len(triples), size=3 * tracks, replace=False)]
    root = DataRoot(path)
    makers = (_captioned_rows, _tagged_rows, _bench_rows)
    rows: dict[str, list[ManifestRow]] = {}
    for index, (dataset, make) in enumerate(zip(DATASETS, makers, strict=True)):
        pairs = make(chosen[index * tracks:(index + 1) * tracks], official_splits)
        rows[dataset] = [canonical_row(row) for row, _ in pairs]  # as the catalog writes them
        write_manifest(root.manifest(dataset), rows[dataset])
        vectors = {row.item_id: audio_vector(track, words, rng) for row, track in pairs}
        write_shards(root, dataset, {k: v for k, v in vectors.items() if k not in NO_VECTOR}, model)
    return Corpus(root, rows)


def word_vectors(rng: np.random.Generator, model: str = MODEL) -> dict[str, np.ndarray]:
    """One fixed random frame vector per word; drawn first from ``rng``, so a seed gives the corpus's own."""
    frame_dim = embedder_spec(model).frame_dim
    return {word: rng.normal(size=frame_dim) for word in (*GENRES, *INSTRUMENTS, *MOODS)}


def audio_vector(track: Track, words: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The enriched vector of frames made of the track's words, a third each, plus a little noise."""
    frames = np.repeat(np.stack([words[word] for word in track.words], axis=1), FRAMES_PER_WORD, axis=1)
    frames = frames + rng.normal(scale=0.05, size=frames.shape)
    return enrich(frames[None])[0]


def _captioned_rows(tracks: list[Track], official: bool) -> list[tuple[ManifestRow, Track]]:
    names = ("train", "train", "train", "valid", "test")
    pairs = []
    for number, track in enumerate(tracks):
        for start in (0, 10):
            native = f"t{number:03d}"
            split = names[number % len(names)]
            if f"captioned:{native}" == MIXED_SPLIT_GROUP:
                split = "train" if start == 0 else "test"
            pairs.append((ManifestRow(
                item_id=f"captioned:{native}@{start}", dataset="captioned", source=f"{native}.mp3",
                split=split if official else None, start_s=float(start), end_s=start + 10.0,
                captions=track.captions(), extra=ManifestRow.encode_extra({"group": native}),
                group=f"captioned:{native}",
            ), track))
    return pairs


def _tagged_rows(tracks: list[Track], official: bool) -> list[tuple[ManifestRow, Track]]:
    pairs = []
    for number, track in enumerate(tracks):
        for start in (0, 15):
            item_id = f"tagged:s{number:03d}@{start}"
            pairs.append((ManifestRow(
                item_id=item_id, dataset="tagged", source=f"s{number:03d}.mp3", start_s=float(start),
                end_s=start + 15.0, tags=() if item_id == NO_TEXT else track.words,
                extra=ManifestRow.encode_extra({"group": f"song-{number}"}), group=f"tagged:song-{number}",
            ), track))
    return pairs


def _bench_rows(tracks: list[Track], official: bool) -> list[tuple[ManifestRow, Track]]:
    pairs = []
    for number, track in enumerate(tracks):
        flagged = official and number % 4 == 1
        split = "test_a" if number % 4 == 2 else "train"
        pairs.append((ManifestRow(
            item_id=f"bench:b{number:03d}", dataset="bench", source=f"audio/b{number:03d}.wav",
            split=split if official else None, captions=track.captions()[:1],
            extra=ManifestRow.encode_extra({"is_audioset_eval_mcaps": flagged}), group=f"bench:b{number:03d}",
            held_out=flagged,
        ), track))
    return pairs


def write_shards(root: DataRoot, dataset: str, vectors: dict[str, np.ndarray], model: str = MODEL) -> None:
    """Two shards for ``captioned`` (reads must cross shards), one for the others."""
    spec = embedder_spec(model)
    attrs = ShardAttributes(model, "1", spec.stored_dim, ENRICHMENT, 22050, 1.0, 0.25, "0", space=spec.space)
    ids = list(vectors)
    parts = [ids[: len(ids) // 2], ids[len(ids) // 2:]] if dataset == "captioned" else [ids]
    for part in parts:
        with ShardWriter(root.shard_dir(model, dataset, spec.space), attrs) as writer:
            writer.append(part, np.stack([vectors[item_id] for item_id in part]).astype(np.float32),
                          [3 * FRAMES_PER_WORD] * len(part))


def small_config(run_id: str, **settings: Any) -> TrainConfig:
    """A pooled, frozen-encoder run on the corpus of :func:`build_corpus` (``official_splits=False``: 60/40 train and
    validation), short enough for a test; ``settings`` set the rest (steps, batch size, evaluation) and override."""
    base: dict[str, Any] = {"model": MODEL, "space": SPACE, "datasets": DATASETS, "run_id": run_id, "head": "pooled",
                            "freeze_encoder": True, "lr": 3e-3, "patience": None, "fractions": (0.6, 0.4, 0.0),
                            "max_length": 32, "device": "cpu"}
    return TrainConfig(**{**base, **settings})
