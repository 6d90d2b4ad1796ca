"""Enriched-embedding shards: plain HDF5 files that any reader in any language can open.

A shard is written under a temporary name and claims the next free ``shard-<n>.h5`` name only when
complete, so readers never see a half-written shard and finished shards are never rewritten.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import get_args

import h5py
import numpy as np

from store.atomic import fsync_dir, temp_path_for
from store.quarantine import guarded, skip_damaged
from store.settings import Storage

_STRINGS = h5py.string_dtype(encoding="utf-8")


@dataclass(frozen=True)
class ShardAttributes:
    model: str
    model_revision: str
    dim: int
    enrichment: str
    sample_rate: int
    window_s: float
    hop_s: float
    musictext_version: str
    created_at: str = ""
    weights_sha256: str = ""
    """sha256 of the model's weights file; empty for weight-free embedders such as ``dsp``."""
    space: str = ""
    """The space the vectors live in (``navidrome-2025.11``): vectors of different spaces are never compared.
    Shards written before spaces existed have none."""
    audio_input: str = ""
    """How the audio became the model's input (channels, resampler, quantisation)."""
    window_padding: str = ""
    """What fills a window the audio does not (``zeros``, ``repeat``, ``none``)."""
    precision: str = ""
    """The numeric precision the model ran at (``reference``, ``bf16``)."""


@dataclass(frozen=True)
class Embedded:
    """One item's stored vector and the number of frames (``T``: windows, latent frames) it summarises."""

    vector: np.ndarray
    frames: int


def shard_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("shard-*.h5")) if directory.exists() else []


CHUNK_BYTES = 1 << 20
"""Most bytes of vectors in one HDF5 chunk. HDF5's default chunk cache is 1 MiB per open dataset in every
language's binding, so a chunk of this size stays cached for any reader; 1,024 rows of MERT's 76,800 float32 would
be a 300 MiB chunk, past every cache. Rows are appended in order, so consecutive chunks lie one after another in
the file and a contiguous range of rows (what a training loader reads) is one run of whole chunks."""
STORAGES: tuple[str, ...] = get_args(Storage)


def chunk_rows_for(dim: int, dtype: str, most: int) -> int:
    """Rows per chunk of ``dim``-wide vectors stored as ``dtype``: at most ``most`` and at most
    :data:`CHUNK_BYTES` of vectors, at least one row (3 rows of MERT in float32, 6 in float16, 840 of ``dsp``)."""
    return max(1, min(most, CHUNK_BYTES // (dim * np.dtype(dtype).itemsize)))


class ShardWriter:
    """Append rows to a new shard; ``close()`` publishes it, an exception discards it.

    Chunks fit the rows the shard really holds. HDF5 fixes a dataset's chunk shape when the dataset is made,
    and the writer cannot know how many rows will come (a unit's failed items never arrive), so it keeps the
    first rows in memory — fewer than one chunk, at most :data:`CHUNK_BYTES` of vectors — and makes the datasets
    when a whole chunk has come, or at ``close()`` with exactly the rows there are. That is the cheapest correct
    way: no row is copied twice, whereas rechunking at publication would rewrite the file. A shard smaller than a
    chunk (a unit of 100 rows of ``dsp`` or ``muq``) is one chunk of exactly its rows, so the file is its data
    plus HDF5's metadata (about 15 KiB); a larger one wastes at most part of its last chunk.

    ``dtype``: how the vectors are stored (:data:`STORAGES`, recorded in the attribute ``storage``); every
    reader converts them to float32.
    """

    def __init__(self, directory: Path, attrs: ShardAttributes, *, dtype: str = "float32", chunk_rows: int = 1024):
        if dtype not in STORAGES:
            raise ValueError(f"shards store vectors as {' or '.join(STORAGES)}, not {dtype}")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.attrs = attrs
        self.dtype = np.dtype(dtype)
        self.chunk_rows = chunk_rows_for(attrs.dim, dtype, chunk_rows)
        self.rows = 0
        self.path: Path | None = None
        self._pending: list[tuple[list[str], np.ndarray, list[int]]] = []
        self._datasets: tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset] | None = None
        self._temp = temp_path_for(directory / "shard.h5")
        self._file = h5py.File(self._temp, "w")
        created = attrs.created_at or datetime.now(UTC).isoformat(timespec="seconds")
        for key, value in {**asdict(attrs), "created_at": created, "storage": self.dtype.name}.items():
            self._file.attrs[key] = value

    def append(self, item_ids: list[str], embeddings: np.ndarray, frames: list[int] | None = None) -> None:
        """Rows of ``embeddings`` for ``item_ids``; ``frames``: how many frames (``T``) each vector summarises,
        -1 where unknown."""
        if embeddings.shape != (len(item_ids), self.attrs.dim):
            raise ValueError(f"expected {(len(item_ids), self.attrs.dim)} embeddings, got {embeddings.shape}")
        counts = [-1] * len(item_ids) if frames is None else list(frames)
        if len(counts) != len(item_ids):
            raise ValueError(f"expected {len(item_ids)} frame counts, got {len(counts)}")
        # numpy rounds to the nearest float16; HDF5's own conversion is not promised to
        self._pending.append((list(item_ids), embeddings.astype(self.dtype), counts))
        self.rows += len(item_ids)
        if self._datasets is not None or self.rows >= self.chunk_rows:
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the rows held in memory, making the datasets first (chunked by at most the rows there are)."""
        if self._datasets is None:
            self._datasets = self._create(min(self.chunk_rows, self.rows))
        ids, embedding, frames = self._datasets
        start = self.rows - sum(len(batch[0]) for batch in self._pending)
        for dataset in (ids, frames):
            dataset.resize((self.rows,))
        embedding.resize((self.rows, self.attrs.dim))
        ids[start:] = [item_id for batch in self._pending for item_id in batch[0]]
        embedding[start:] = np.concatenate([batch[1] for batch in self._pending])
        frames[start:] = [count for batch in self._pending for count in batch[2]]
        self._pending = []

    def _create(self, chunk: int) -> tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset]:
        dim = self.attrs.dim
        return (
            self._file.create_dataset("item_id", shape=(0,), maxshape=(None,), dtype=_STRINGS, chunks=(chunk,)),
            self._file.create_dataset("embedding", shape=(0, dim), maxshape=(None, dim), dtype=self.dtype,
                                      chunks=(chunk, dim)),
            self._file.create_dataset("frames", shape=(0,), maxshape=(None,), dtype="int32", chunks=(chunk,)),
        )

    def close(self) -> Path | None:
        """Publish under the next free shard name; an empty shard is discarded (returns ``None``)."""
        try:
            if self._pending:
                self._write_pending()
            self._file.close()
            if self.rows == 0:
                return None
            self.path = self._publish()
            return self.path
        finally:
            self._file.close()
            self._temp.unlink(missing_ok=True)

    def _publish(self) -> Path:
        with open(self._temp, "rb+") as handle:
            os.fsync(handle.fileno())
        while True:
            existing = shard_paths(self.directory)
            number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
            target = self.directory / f"shard-{number:05d}.h5"
            try:
                os.link(self._temp, target)
            except FileExistsError:
                continue
            fsync_dir(self.directory)
            return target

    def abort(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class Shard:
    path: Path
    item_ids: list[str]
    attrs: dict[str, object]

    def embeddings(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        with h5py.File(self.path, "r") as handle:
            return np.asarray(handle["embedding"][rows], dtype=np.float32)

    def frames(self) -> np.ndarray:
        """Frames (``T``) per row; -1 where unknown, all -1 for shards written before they were kept."""
        with h5py.File(self.path, "r") as handle:
            if "frames" not in handle:
                return np.full(len(self.item_ids), -1, dtype=np.int32)
            return np.asarray(handle["frames"][:], dtype=np.int32)

    @property
    def space(self) -> str:
        """The space of its vectors; "" for a shard written before spaces existed."""
        value = self.attrs.get("space", "")
        return value.decode() if isinstance(value, bytes) else str(value)


def open_shard(path: Path) -> Shard:
    """A shard's item ids and attributes; one HDF5 cannot read is set aside and raises
    :class:`~store.quarantine.DamagedFileError` saying where it went."""
    return guarded(path, _open)


def _open(path: Path) -> Shard:
    with h5py.File(path, "r") as handle:
        return Shard(path, _item_ids(handle), _attributes(handle))


def _item_ids(handle: h5py.File) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else value for value in handle["item_id"][:]]


def open_shard_ids(path: Path) -> list[str]:
    """A shard's item ids alone (unguarded: callers pass it to :func:`~store.quarantine.skip_damaged`)."""
    with h5py.File(path, "r") as handle:
        return _item_ids(handle)


def read_shard_attributes(path: Path) -> dict[str, object]:
    """A shard's attributes alone, without reading its item ids (a damaged shard: as :func:`open_shard`)."""
    return guarded(path, _read_attributes)


def _read_attributes(path: Path) -> dict[str, object]:
    with h5py.File(path, "r") as handle:
        return _attributes(handle)


def _attributes(handle: h5py.File) -> dict[str, object]:
    return {key: (value.item() if hasattr(value, "item") else value) for key, value in handle.attrs.items()}


def iter_shards(directory: Path) -> Iterator[Shard]:
    """The readable shards of ``directory``; damaged ones are set aside and passed over, so their rows count
    as not embedded and the next embed run embeds them again."""
    for path in shard_paths(directory):
        shard = skip_damaged(path, _open)
        if shard is not None:
            yield shard
