"""Integrity of embedding shards: what training and retrieval read must be complete, finite, unit-norm
and traceable to a manifest row.

Rows are read in slices aligned to the HDF5 chunks, so a shard larger than memory can be checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np

from embedders import stored_dim
from embedders.weights import SPECS
from store.shards import ShardAttributes, shard_paths
from verification.audio import Problem

REQUIRED_ATTRIBUTES = tuple(f.name for f in fields(ShardAttributes))
NORM_TOLERANCE = 1e-3
_READ_BYTES = 16 << 20


@dataclass
class ShardCheck:
    """What :func:`check_shards` found in one ``embeddings/<model>/<dataset>`` directory.

    ``item_ids`` holds every id found in a readable shard, so a report can count embedded items without
    reading the shards again.
    """

    shards: int = 0
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    model: str | None = None
    model_revision: str | None = None
    dim: int | None = None
    item_ids: set[str] = field(default_factory=set)


def check_model_shards(directory: Path, model: str, *, manifest_ids: set[str]) -> ShardCheck:
    """:func:`check_shards`, plus the architecture's width for vectors of a model's pinned weights.

    Weights of another revision (a smaller variant given with ``--weights``, say) give another width,
    legitimately; for them the shards only have to agree with each other.
    """
    check = check_shards(directory, manifest_ids=manifest_ids)
    spec = SPECS.get(model)
    if check.dim is None or (spec is not None and check.model_revision != spec.revision):
        return check
    expected = stored_dim(model)
    if check.dim != expected:
        check.problems.append(Problem(
            None, "wrong_dim", f"shards in {directory} have {check.dim} columns, but {model} gives {expected}; "
            f"move them aside and re-run embedding with {model}."))
    return check


def check_shards(directory: Path, *, manifest_ids: set[str], dim: int | None = None) -> ShardCheck:
    """Check every ``shard-*.h5`` in ``directory``; ``dim`` is the width the model promises, when known."""
    check = ShardCheck(dim=dim)
    owner: dict[str, str] = {}
    for path in shard_paths(directory):
        check.shards += 1
        shard = _ShardChecker(path, check, owner, manifest_ids)
        try:
            with h5py.File(path, "r") as handle:
                shard.check(handle)
        except OSError as error:
            shard.add(None, "unreadable_shard", f"cannot be read as HDF5 ({error})")
    check.item_ids = set(owner)
    return check


@dataclass
class _ShardChecker:
    path: Path
    result: ShardCheck
    owner: dict[str, str]
    """Item id → name of the first shard holding it, across the whole directory."""
    manifest_ids: set[str]

    @property
    def redo(self) -> str:
        model, dataset = self.path.parent.parent.name, self.path.parent.name
        return f"move {self.path.name} aside and re-run embedding of {dataset} with {model}"

    def add(self, item_id: str | None, reason: str, finding: str, advice: str | None = None) -> None:
        subject = f"{item_id} in shard {self.path}" if item_id else f"shard {self.path}"
        self.result.problems.append(Problem(item_id, reason, f"{subject} {finding}; {advice or self.redo}."))

    def check(self, handle: h5py.File) -> None:
        self._check_attributes(handle)
        ids, embedding = handle.get("item_id"), handle.get("embedding")
        if not isinstance(ids, h5py.Dataset) or ids.ndim != 1 or h5py.check_string_dtype(ids.dtype) is None:
            self.add(None, "missing_dataset", "has no 1-D string dataset 'item_id'")
            return
        if not isinstance(embedding, h5py.Dataset):
            self.add(None, "missing_dataset", "has no dataset 'embedding'")
            return
        if embedding.ndim != 2:
            self.add(None, "wrong_dim", f"has a {embedding.ndim}-D 'embedding' of shape {embedding.shape}, "
                                        "expected rows × dim")
            return
        self._check_dim(handle, embedding)
        item_ids = list(ids.asstr()[:])
        if len(item_ids) != embedding.shape[0]:
            self.add(None, "row_count_mismatch", f"has {len(item_ids)} item ids but {embedding.shape[0]} "
                                                 "embedding rows")
        rows = min(len(item_ids), embedding.shape[0])
        self.result.rows += rows
        self._check_ids(item_ids[:rows])
        self._check_rows(item_ids, embedding, rows)

    def _check_attributes(self, handle: h5py.File) -> None:
        missing = [name for name in REQUIRED_ATTRIBUTES if name not in handle.attrs]
        if missing:
            self.add(None, "missing_attribute", f"lacks the attribute(s) {', '.join(missing)}")
        model, revision = (_text(handle.attrs.get(name)) for name in ("model", "model_revision"))
        if self.result.model is None:
            self.result.model, self.result.model_revision = model, revision
        elif (model, revision) != (self.result.model, self.result.model_revision):
            self.add(None, "inconsistent_model", f"was made by {model} {revision} but earlier shards by "
                                                 f"{self.result.model} {self.result.model_revision}; another "
                                                 "model revision belongs in its own directory",
                     advice=f"move {self.path.name} to a directory of its own")

    def _check_dim(self, handle: h5py.File, embedding: h5py.Dataset) -> None:
        width = embedding.shape[1]
        declared = handle.attrs.get("dim")
        expected = self.result.dim if self.result.dim is not None else width
        self.result.dim = expected
        if declared is not None and int(declared) != width:
            self.add(None, "wrong_dim", f"has {width} columns but its 'dim' attribute says {int(declared)}")
        elif width != expected:
            self.add(None, "wrong_dim", f"has {width} columns, expected {expected}")

    def _check_ids(self, item_ids: list[str]) -> None:
        seen_here: set[str] = set()
        for item_id in item_ids:
            first = self.owner.setdefault(item_id, self.path.name)
            if first != self.path.name or item_id in seen_here:
                self.add(item_id, "duplicate_id", f"is already in {first}; duplicates skew retrieval metrics")
            seen_here.add(item_id)
            if item_id not in self.manifest_ids:
                dataset = self.path.parent.name
                self.add(item_id, "unknown_id", f"has no row in the manifest of {dataset}",
                         advice="check that the shard belongs to this dataset and that the manifest was not "
                                "replaced, then move the shard aside")

    def _check_rows(self, item_ids: list[str], embedding: h5py.Dataset, rows: int) -> None:
        for start, block in _row_blocks(embedding, rows):
            finite = np.isfinite(block).all(axis=1)
            norms = np.linalg.norm(np.where(np.isfinite(block), block, 0.0), axis=1)
            for offset in np.flatnonzero(~finite):
                row = start + offset
                self.add(item_ids[row], "non_finite", f"row {row} has NaN or infinite values")
            for offset in np.flatnonzero(finite & (np.abs(norms - 1.0) > NORM_TOLERANCE)):
                row = start + offset
                self.add(item_ids[row], "not_unit_norm",
                         f"row {row} has L2 norm {norms[offset]:.6f}, expected 1 ± {NORM_TOLERANCE:g}")


def _row_blocks(embedding: h5py.Dataset, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Row slices of about ``_READ_BYTES`` in float64, a whole number of HDF5 chunks each."""
    row_bytes = max(1, embedding.shape[1]) * 8
    chunk_rows = embedding.chunks[0] if embedding.chunks else 1
    step = chunk_rows * max(1, _READ_BYTES // (row_bytes * chunk_rows))
    for start in range(0, rows, step):
        yield start, np.asarray(embedding[start:min(start + step, rows)], dtype=np.float64)


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)
