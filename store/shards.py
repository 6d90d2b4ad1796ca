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

import h5py
import numpy as np

from store.atomic import fsync_dir, temp_path_for
from store.quarantine import guarded, skip_damaged

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


class ShardWriter:
    """Append rows in chunks to a new shard; ``close()`` publishes it, an exception discards it."""

    def __init__(self, directory: Path, attrs: ShardAttributes, *, dtype: str = "float32", chunk_rows: int = 1024):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.attrs = attrs
        self.rows = 0
        self.path: Path | None = None
        self._temp = temp_path_for(directory / "shard.h5")
        self._file = h5py.File(self._temp, "w")
        chunk = max(1, min(chunk_rows, max(1, (4 << 20) // (attrs.dim * np.dtype(dtype).itemsize))))
        self._ids = self._file.create_dataset("item_id", shape=(0,), maxshape=(None,), dtype=_STRINGS, chunks=(chunk,))
        self._emb = self._file.create_dataset(
            "embedding", shape=(0, attrs.dim), maxshape=(None, attrs.dim), dtype=dtype, chunks=(chunk, attrs.dim)
        )
        self._frames = self._file.create_dataset("frames", shape=(0,), maxshape=(None,), dtype="int32",
                                                 chunks=(chunk,))
        created = attrs.created_at or datetime.now(UTC).isoformat(timespec="seconds")
        for key, value in {**asdict(attrs), "created_at": created}.items():
            self._file.attrs[key] = value

    def append(self, item_ids: list[str], embeddings: np.ndarray, frames: list[int] | None = None) -> None:
        """Rows of ``embeddings`` for ``item_ids``; ``frames``: how many frames (``T``) each vector summarises,
        -1 where unknown."""
        if embeddings.shape != (len(item_ids), self.attrs.dim):
            raise ValueError(f"expected {(len(item_ids), self.attrs.dim)} embeddings, got {embeddings.shape}")
        counts = [-1] * len(item_ids) if frames is None else frames
        if len(counts) != len(item_ids):
            raise ValueError(f"expected {len(item_ids)} frame counts, got {len(counts)}")
        start, self.rows = self.rows, self.rows + len(item_ids)
        for dataset in (self._ids, self._frames):
            dataset.resize((self.rows,))
        self._emb.resize((self.rows, self.attrs.dim))
        self._ids[start:] = item_ids
        self._emb[start:] = embeddings
        self._frames[start:] = counts

    def close(self) -> Path | None:
        """Publish under the next free shard name; an empty shard is discarded (returns ``None``)."""
        self._file.flush()
        self._file.close()
        try:
            if self.rows == 0:
                return None
            self.path = self._publish()
            return self.path
        finally:
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
        ids = [value.decode() if isinstance(value, bytes) else value for value in handle["item_id"][:]]
        return Shard(path, ids, _attributes(handle))


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


def embedded_ids(directory: Path) -> set[str]:
    """Every item id that already has an embedding in this model/dataset directory (in a readable shard)."""
    return {item_id for shard in iter_shards(directory) for item_id in shard.item_ids}
