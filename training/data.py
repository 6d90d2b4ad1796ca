"""Training pairs: manifest rows that have a vector of one audio embedder, their texts and their split.

Splits are decided per *group* (a track, a video, a song: the manifest's ``group``), never per clip: clips of
one recording share its sound, so a group split across train and test would let a model score by recognising
the recording. A group held out in any catalogued dataset is ``test`` (a recording evaluated anywhere is never
learnt from); else it takes the most held-out official split of its rows (test over val over train) so a
source whose splits are per clip cannot leak either; groups with no official split are hashed into the
fractions.

Vectors stay in the HDF5 shards. Training reads them near the speed of a sequential read: an epoch shuffles
*blocks* (the training rows of one read unit: whole HDF5 chunks, about :data:`READ_BYTES`), then the rows
within each window of :data:`SHUFFLE_BLOCKS` blocks, and the DataLoader reads a whole window at once, one slice
per block, so every chunk is read once per epoch and never row by row. Reads go through at most
:data:`MAX_OPEN_SHARDS` h5py handles per process, whatever the number of shards; handles do not survive a fork,
so each DataLoader worker opens its own.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from store.errors import InvalidInputError, MissingInputError
from store.forking import forget_inherited_exit_hooks
from store.layout import DataRoot
from store.manifest import ManifestRow, read_manifest
from store.shard_index import vector_locations
from store.splits import HELD_OUT_SPLIT, SPLITS, canonical_split
from training.config import check_fractions

_HELD_OUT = {name: rank for rank, name in enumerate(SPLITS)}

MAX_OPEN_SHARDS = 16
"""Shards one :class:`ShardReader` keeps open, the least recently used closed first. A handle per shard for the
whole run hit the per-process open-file limit (often 1,024) past about 100k items of one model; a training
window spans at most :data:`SHUFFLE_BLOCKS` shards, and reopening a shard costs about a millisecond."""

READ_BYTES = 4 << 20
"""Stored vectors read with one slice: whole chunks, as many as make about this many bytes (one row of MERT's
float32 is 300 KiB). Large enough that a read runs at disk speed whatever chunk size a shard was written with,
small enough that :data:`SHUFFLE_BLOCKS` of them make a window of modest memory."""

SHUFFLE_BLOCKS = 16
"""Blocks (one read unit's training rows each, :data:`READ_BYTES`) whose rows are shuffled together: enough to
mix a batch across recordings and shards, few enough that a window read at once stays near 64 MiB of stored
vectors (twice that as float32) per window in flight."""

Pairs = tuple[list[str], torch.Tensor]
"""Texts and their vectors stacked into one float32 ``[len(texts), dim]`` tensor."""


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
                items.append(manifest_item(row, location))
    if len(set(dims.values())) != 1:
        raise ValueError(f"{model} vectors differ in size across datasets: {dims}")
    assigned = _group_splits(items, fractions, seed, held_out_groups(root))
    by_split: dict[str, list[Item]] = {name: [] for name in SPLITS}
    for item in items:
        by_split[assigned[item.group]].append(_with_split(item, assigned[item.group]))
    return Splits(**by_split, audio_dim=next(iter(dims.values())), skipped=skipped)


def manifest_item(row: ManifestRow, location: tuple[Path, int]) -> Item:
    """The training item of a manifest row whose vector is at ``location`` (shard, row)."""
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


def read_unit_rows(vectors: h5py.Dataset) -> int:
    """Rows read with one slice, starting at a multiple of this: whole chunks, about :data:`READ_BYTES` of them
    (rows of about that size when the dataset has no chunks)."""
    chunk_rows = vectors.chunks[0] if vectors.chunks is not None else 1
    return chunk_rows * max(1, READ_BYTES // (chunk_rows * vectors.shape[1] * vectors.dtype.itemsize))


def _by_unit(rows: np.ndarray, unit_rows: int) -> list[np.ndarray]:
    """Positions of sorted ``rows`` grouped by the read unit that stores them: each group is read with one slice
    from its first row to its last, so a chunk is read once, and what one slice holds is bounded by a unit
    whatever the rows asked for."""
    return np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows // unit_rows)) + 1)


class ShardReader:
    """Vectors of items, read straight from their shards through at most :data:`MAX_OPEN_SHARDS` h5py handles
    per process."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._open: OrderedDict[Path, h5py.Dataset] = OrderedDict()

    def read(self, items: Sequence[Item]) -> np.ndarray:
        """float32 ``[len(items), dim]`` in ``items`` order (:meth:`read_tensor`)."""
        return self.read_tensor(items).numpy()

    def read_tensor(self, items: Sequence[Item], *, shared: bool = False) -> torch.Tensor:
        """float32 ``[len(items), dim]`` in ``items`` order; per shard, one slice per read unit that holds a row.

        Each row is converted straight into its place by torch, which converts float16 several times faster than
        numpy on CPUs without AVX-512, with no intermediate copy of the chunk. ``shared`` makes the tensor in
        shared memory before filling it: a DataLoader worker hands tensors over through shared memory, and would
        copy one made elsewhere there whole."""
        if not items:
            raise ValueError("no items to read")
        out = torch.empty((len(items), self.vectors(items[0].shard).shape[1]), dtype=torch.float32)
        if shared:
            out.share_memory_()
        by_shard: dict[Path, list[int]] = {}
        for position, item in enumerate(items):
            by_shard.setdefault(item.shard, []).append(position)
        for path, positions in by_shard.items():
            vectors = self.vectors(path)
            rows = np.array([items[p].row for p in positions])
            order = np.argsort(rows, kind="stable")
            rows, targets = rows[order], np.asarray(positions)[order]
            for unit in _by_unit(rows, read_unit_rows(vectors)):
                first, last = rows[unit[0]], rows[unit[-1]]
                block = torch.from_numpy(vectors[first:last + 1])
                for row, target in zip((rows[unit] - first).tolist(), targets[unit].tolist(), strict=True):
                    out[target].copy_(block[row])
        return out

    def vectors(self, path: Path) -> h5py.Dataset:
        """The ``embedding`` dataset of shard ``path``, kept open among this process's most recently used ones."""
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), OrderedDict()
        if path in self._open:
            self._open.move_to_end(path)
        else:
            if len(self._open) >= MAX_OPEN_SHARDS:
                self._open.popitem(last=False)[1].file.close()
            self._open[path] = h5py.File(path, "r")["embedding"]
        return self._open[path]

    def close(self) -> None:
        if self._pid == os.getpid():
            for vectors in self._open.values():
                vectors.file.close()
        self._open = OrderedDict()

    def __getstate__(self) -> dict[str, object]:
        return {"_pid": None, "_open": OrderedDict()}


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

    @cached_property
    def blocks(self) -> np.ndarray:
        """Each item's block, for :class:`EpochBatches`: items whose rows lie in one read unit
        (:func:`read_unit_rows`) of one shard share a block, numbered in order of first appearance."""
        units = {path: read_unit_rows(self.reader.vectors(path)) for path in {item.shard for item in self.items}}
        numbers: dict[tuple[Path, int], int] = {}
        return np.array([numbers.setdefault((item.shard, item.row // units[item.shard]), len(numbers))
                         for item in self.items], dtype=np.int64)

    def text(self, index: int) -> str:
        texts = self.items[index].texts
        offset = int.from_bytes(hashlib.sha1(f"{self.seed}:{index}".encode()).digest()[:4], "big")
        return texts[(offset + self.epoch) % len(texts)]

    def batch(self, indices: Sequence[int]) -> Pairs:
        """The texts and one float32 ``[len(indices), dim]`` tensor of the vectors of ``indices``, read at once
        (in shared memory in a DataLoader worker, which hands it over there)."""
        vectors = self.reader.read_tensor([self.items[i] for i in indices], shared=get_worker_info() is not None)
        return [self.text(i) for i in indices], vectors

    def __getitem__(self, index: int) -> tuple[str, np.ndarray]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[str, np.ndarray]]:
        """A whole batch at once (the DataLoader calls this when it exists): one read per shard, not per row."""
        texts, vectors = self.batch(indices)
        return list(zip(texts, vectors.numpy(), strict=True))


class EpochBatches(Sampler[list[int]]):
    """Full batches of one epoch's seeded, block-shuffled order, starting at batch ``start``; with ``shards`` > 1,
    slice ``shard`` of ``shards`` equal slices of each of them (the rows one of several processes trains on: the
    processes together see exactly the batches one process would, :mod:`training.distributed`).

    ``blocks[i]`` names the block of index ``i`` (:attr:`PairDataset.blocks`; by default every index is a block
    of its own, which makes the order a plain permutation). The blocks are shuffled and taken
    :data:`SHUFFLE_BLOCKS` at a time, and the indices of each such window are shuffled: every index once, read a
    window at a time (:meth:`windows`), in an order that depends only on ``(seed, epoch)`` and the blocks, so a
    resumed run skips the batches it already trained on without reading them, and sees the same batches as a run
    that never stopped.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, epoch: int, start: int = 0,
                 blocks: Sequence[int] | np.ndarray | None = None, shard: int = 0, shards: int = 1) -> None:
        if size < batch_size:
            raise InvalidInputError(f"the training split has {size} items, fewer than one batch of {batch_size}; "
                                    f"lower the batch size or add data")
        if blocks is not None and len(blocks) != size:
            raise ValueError(f"{len(blocks)} block numbers for {size} items")
        if batch_size % shards or not 0 <= shard < shards:
            raise ValueError(f"cannot take slice {shard} of {shards} equal slices of a batch of {batch_size}")
        self.size, self.batch_size, self.seed, self.epoch, self.start = size, batch_size, seed, epoch, start
        self.blocks = np.arange(size) if blocks is None else np.unique(blocks, return_inverse=True)[1]
        self.shard, self.shard_size = shard, batch_size // shards

    def __len__(self) -> int:
        return self.size // self.batch_size - self.start

    def __iter__(self) -> Iterator[list[int]]:
        order, _ = self.order()
        for batch in range(self.start, self.size // self.batch_size):
            first = batch * self.batch_size + self.shard * self.shard_size
            yield order[first:first + self.shard_size].tolist()

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's indices in order, and the number of the window each is read in (ascending)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        window = rng.permutation(self.blocks.max() + 1)[self.blocks] // SHUFFLE_BLOCKS
        order = np.lexsort((rng.random(self.size), window))
        return order, window[order]

    def windows(self) -> list[list[int]]:
        """The indices of the batches this sampler yields, in order, cut where a window ends: each part is read
        at once, and each block lies in one part, so no chunk is read twice in an epoch."""
        order, window = self.order()
        kept = np.arange(self.start * self.batch_size, self.size // self.batch_size * self.batch_size)
        kept = kept[kept % self.batch_size // self.shard_size == self.shard]
        cuts = np.flatnonzero(np.diff(window[kept])) + 1
        return [part.tolist() for part in np.split(order[kept], cuts)]


class _WindowReads(Dataset):
    """``pairs`` indexed by lists of indices, so that a DataLoader item is one window, read at once."""

    def __init__(self, pairs: PairDataset) -> None:
        self.pairs = pairs

    def __getitem__(self, indices: list[int]) -> Pairs:
        return self.pairs.batch(indices)


def _as_read(window: Pairs) -> Pairs:
    """A window as read: it is texts and one tensor already, which the DataLoader's default conversion would walk
    text by text."""
    return window


def rebatched(windows: Iterable[Pairs], batch_size: int) -> Iterator[Pairs]:
    """Batches of ``batch_size`` pairs, in order, out of ``(texts, vectors)`` windows of any size: a batch inside
    one window is a view of it, only one that spans windows is copied."""
    texts: list[str] = []
    parts: list[torch.Tensor] = []
    for window_texts, vectors in windows:
        start = 0
        while len(window_texts) - start >= batch_size - len(texts):
            end = start + batch_size - len(texts)
            head = vectors[start:end]
            yield texts + window_texts[start:end], torch.cat([*parts, head]) if parts else head
            texts, parts, start = [], [], end
        if start < len(window_texts):
            texts += window_texts[start:]
            parts.append(vectors[start:])


def pair_loader(dataset: PairDataset, sampler: EpochBatches, *, num_workers: int = 0, pin_memory: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Pairs]:
    """The batches training reads, as ``sampler`` yields them: texts and stacked float32 vectors. A DataLoader
    reads each of the sampler's windows whole (in a worker when there are workers: processes safe to exit inside
    a Prefect flow, :mod:`store.forking`), and the windows are cut into batches here."""
    windows = DataLoader(_WindowReads(dataset), sampler=sampler.windows(), batch_size=None, collate_fn=_as_read,
                         num_workers=num_workers, pin_memory=pin_memory, generator=generator,
                         worker_init_fn=forget_inherited_exit_hooks if num_workers else None)
    return rebatched(windows, sampler.shard_size)
