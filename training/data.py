"""Training pairs: manifest rows that have a vector of one audio embedder, their texts and their split.

Splits are decided per *group* (a track, a video, a song: the manifest's ``group``), never per clip: clips of
one recording share its sound, so a group split across train and test would let a model score by recognising
the recording. A group held out in any catalogued dataset is ``test`` (a recording evaluated anywhere is never
learnt from); else it takes the most held-out official split of its rows (test over val over train) so a
source whose splits are per clip cannot leak either; groups with no official split are hashed into the
fractions.

Vectors stay in the HDF5 shards and are read per batch (one read per shard, rows sorted), through one
h5py handle per shard per process: handles do not survive a fork, so each DataLoader worker opens its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from store.errors import InvalidInputError, MissingInputError
from store.forking import forget_inherited_exit_hooks
from store.layout import DataRoot
from store.manifest import ManifestRow, read_manifest
from store.shard_index import vector_locations
from store.splits import HELD_OUT_SPLIT, SPLITS, canonical_split

_HELD_OUT = {name: rank for rank, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class Item:
    """One clip with a vector: where the vector is (``shard``, ``row``) and what may describe it."""

    item_id: str
    dataset: str
    group: str
    split: str
    captions: tuple[str, ...]
    tags: tuple[str, ...]
    shard: Path
    row: int

    @property
    def texts(self) -> tuple[str, ...]:
        """The captions, or one sentence made of the tags when a source has no captions."""
        return self.captions or (tags_sentence(self.tags),)


@dataclass(frozen=True)
class Splits:
    train: list[Item]
    val: list[Item]
    test: list[Item]
    audio_dim: int
    skipped: dict[str, int] = field(default_factory=dict)
    """Manifest rows left out, by reason (``no_vector``, ``no_text``), so a report can say why a corpus shrank."""

    def __getitem__(self, name: str) -> list[Item]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; the splits are {', '.join(SPLITS)}")
        return getattr(self, name)


def tags_sentence(tags: Sequence[str]) -> str:
    """``("rock", "guitar", "energetic")`` → ``"A rock track with guitar, energetic."``.

    Tag-only sources (MTG-Jamendo, MagnaTagATune, MSD) then read like the captioned ones to the sentence
    encoder, which was trained on sentences. One template: the first tag names the track, the rest follow.
    """
    if not tags:
        raise ValueError("an item without captions needs at least one tag to be described")
    first, rest = tags[0], tags[1:]
    article = "An" if first[:1].lower() in "aeiou" else "A"
    sentence = f"{article} {first} track"
    return f"{sentence} with {', '.join(rest)}." if rest else f"{sentence}."


def official_split(row: ManifestRow) -> str | None:
    """The row's split as ``train``/``val``/``test`` (``test`` for held-out audio), ``None`` when the source
    publishes none. Raises on a split name it cannot place: guessing could put evaluation audio into training."""
    if row.held_out:
        return HELD_OUT_SPLIT
    try:
        return canonical_split(row.split)
    except ValueError as error:
        raise InvalidInputError(f"{row.item_id}: {error}, in the {row.dataset} manifest") from None


def held_out_groups(root: DataRoot) -> set[str]:
    """The groups of every held-out row in every catalogued dataset of ``root``, trained on or not: the Song
    Describer Dataset's tracks are MTG-Jamendo test tracks, MusicCaps' evaluation clips are AudioSet videos, and
    a recording evaluated anywhere must not be learnt from anywhere."""
    return {row.group for dataset in root.datasets() for row in read_manifest(root.manifest(dataset))
            if row.held_out and row.group}


def hashed_split(group: str, fractions: tuple[float, float, float], seed: int) -> str:
    """A split from a hash of the group: stable whatever else is in the corpus, different per seed."""
    digest = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    bound = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        bound += fraction
        if position < bound:
            return name
    return SPLITS[-1]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers (train, val, test) summing to 1, "
                         f"got {tuple(fractions)}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def load_splits(
    root: DataRoot,
    datasets: Sequence[str],
    model: str,
    space: str,
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Splits:
    """Items of ``datasets`` that have a ``model`` vector and a text, split by group (module docstring)."""
    fractions = check_fractions(fractions)
    if not datasets:
        raise ValueError("name at least one dataset to train on")
    items: list[Item] = []
    skipped = {"no_vector": 0, "no_text": 0}
    dims: dict[str, int] = {}
    for dataset in datasets:
        rows = read_manifest(root.manifest(dataset))
        if not rows:
            raise MissingInputError(f"{dataset} has no manifest at {root.manifest(dataset)}; run its catalog first")
        found = vector_locations(root, model, dataset, space)
        locations, dims[dataset] = found.locations, found.dim
        for row in rows:
            location = locations.get(row.item_id)
            if location is None:
                skipped["no_vector"] += 1
            elif not (row.captions or row.tags):
                skipped["no_text"] += 1
            else:
                items.append(_item(row, location))
    if len(set(dims.values())) != 1:
        raise ValueError(f"{model} vectors differ in size across datasets: {dims}")
    assigned = _group_splits(items, fractions, seed, held_out_groups(root))
    by_split: dict[str, list[Item]] = {name: [] for name in SPLITS}
    for item in items:
        by_split[assigned[item.group]].append(_with_split(item, assigned[item.group]))
    return Splits(**by_split, audio_dim=next(iter(dims.values())), skipped=skipped)


def _item(row: ManifestRow, location: tuple[Path, int]) -> Item:
    return Item(row.item_id, row.dataset, row.group or row.item_id, official_split(row) or "", tuple(row.captions),
                tuple(row.tags), location[0], location[1])


def _with_split(item: Item, split: str) -> Item:
    return Item(item.item_id, item.dataset, item.group, split, item.captions, item.tags, item.shard, item.row)


def _group_splits(items: Sequence[Item], fractions: tuple[float, float, float], seed: int,
                  held_out: set[str]) -> dict[str, str]:
    """Each group's split: ``test`` when it is held out in any dataset, else the most held-out official split
    among its items, else the hashed one."""
    official: dict[str, str] = {group: HELD_OUT_SPLIT for group in held_out}
    for item in items:
        if item.split and _HELD_OUT[item.split] >= _HELD_OUT.get(official.get(item.group, ""), -1):
            official[item.group] = item.split
    return {item.group: official.get(item.group) or hashed_split(item.group, fractions, seed) for item in items}


class ShardReader:
    """Vectors of items, read straight from their shards with one h5py handle per shard and process."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._files: dict[Path, h5py.File] = {}

    def read(self, items: Sequence[Item]) -> np.ndarray:
        """float32 ``[len(items), dim]`` in ``items`` order; one sorted read per shard."""
        by_shard: dict[Path, list[int]] = {}
        for position, item in enumerate(items):
            by_shard.setdefault(item.shard, []).append(position)
        out: np.ndarray | None = None
        for path, positions in by_shard.items():
            rows = np.array([items[p].row for p in positions])
            unique, inverse = np.unique(rows, return_inverse=True)
            block = np.asarray(self._file(path)["embedding"][unique], dtype=np.float32)
            if out is None:
                out = np.empty((len(items), block.shape[1]), dtype=np.float32)
            out[positions] = block[inverse]
        if out is None:
            raise ValueError("no items to read")
        return out

    def _file(self, path: Path) -> h5py.File:
        if self._pid != os.getpid():
            self._pid, self._files = os.getpid(), {}
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        return self._files[path]

    def close(self) -> None:
        if self._pid == os.getpid():
            for handle in self._files.values():
                handle.close()
        self._files = {}

    def __getstate__(self) -> dict[str, object]:
        return {"_pid": None, "_files": {}}


class PairDataset(Dataset):
    """``(text, vector)`` pairs, one per item; which of an item's texts depends on the epoch.

    Item ``i`` shows text ``(offset_i + epoch) mod n_i``, with ``offset_i`` from a hash of ``seed`` and ``i``:
    over ``n_i`` epochs every caption is used once, and the choice is the same on every run and worker.
    Set the epoch before a DataLoader iterator is created, so workers receive it.
    """

    def __init__(self, items: Sequence[Item], *, seed: int = 0, reader: ShardReader | None = None) -> None:
        self.items = list(items)
        self.seed = seed
        self.epoch = 0
        self.reader = reader or ShardReader()

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def text(self, index: int) -> str:
        texts = self.items[index].texts
        offset = int.from_bytes(hashlib.sha1(f"{self.seed}:{index}".encode()).digest()[:4], "big")
        return texts[(offset + self.epoch) % len(texts)]

    def __getitem__(self, index: int) -> tuple[str, np.ndarray]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[str, np.ndarray]]:
        """A whole batch at once (the DataLoader calls this when it exists): one read per shard, not per row."""
        vectors = self.reader.read([self.items[i] for i in indices])
        return [(self.text(i), vector) for i, vector in zip(indices, vectors, strict=True)]


def collate_pairs(samples: Sequence[tuple[str, np.ndarray]]) -> tuple[list[str], torch.Tensor]:
    """A batch of pairs as the texts and one float32 ``[B, dim]`` tensor of their vectors."""
    return [text for text, _ in samples], torch.from_numpy(np.stack([vector for _, vector in samples]))


class EpochBatches(Sampler[list[int]]):
    """Full batches of a seeded permutation of one epoch, starting at batch ``start``.

    The order depends only on ``(seed, epoch)``, so a resumed run skips the batches it already trained on
    without reading them, and sees the same batches as a run that never stopped.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, epoch: int, start: int = 0) -> None:
        if size < batch_size:
            raise InvalidInputError(f"the training split has {size} items, fewer than one batch of {batch_size}; "
                                    f"lower the batch size or add data")
        self.size, self.batch_size, self.seed, self.epoch, self.start = size, batch_size, seed, epoch, start

    def __len__(self) -> int:
        return self.size // self.batch_size - self.start

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        for batch in range(self.start, self.size // self.batch_size):
            yield order[batch * self.batch_size:(batch + 1) * self.batch_size].tolist()


def pair_loader(dataset: PairDataset, sampler: EpochBatches, *, num_workers: int = 0, pin_memory: bool = False,
                generator: torch.Generator | None = None) -> DataLoader:
    """The DataLoader training reads pairs through: batches from ``sampler``, texts and stacked vectors, worker
    processes safe to exit inside a Prefect flow (:mod:`store.forking`)."""
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_pairs,
                      pin_memory=pin_memory, generator=generator,
                      worker_init_fn=forget_inherited_exit_hooks if num_workers else None)
