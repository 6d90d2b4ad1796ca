"""Integrity of embedding shards: what training and retrieval read must be complete, finite, unit-norm,
in the space it claims and traceable to a manifest row.

What a model's shards must be (its space, and its width for its pinned weights) is handed in by the caller
as an :class:`Expected`, so this module needs nothing but the data root. Shards written before spaces
existed (``embeddings/<model>/<dataset>``) are found by :func:`old_space_problems`, each with the command
that re-embeds into the current space.

Rows are read in slices aligned to the HDF5 chunks, so a shard larger than memory can be checked. Given a
record (:mod:`verification.shard_record`), a shard's vectors are read once: an unchanged shard whose vectors were
found sound before is trusted, and only its attributes and item ids, which the manifest is checked against, are
read again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import h5py
import numpy as np

from store.quarantine import DamagedFileError, is_damage, set_aside
from store.shards import ShardAttributes, read_shard_attributes, shard_paths
from verification.audio import Problem
from verification.shard_record import FileStamp, read_record, write_record

REQUIRED_ATTRIBUTES = tuple(f.name for f in fields(ShardAttributes))
NORM_TOLERANCE = 1e-3
CHECKS = f"finite, unit norm within {NORM_TOLERANCE:g}"
"""The rules a recorded shard's vectors passed: a record made under others is not trusted."""
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
    trusted_shards: int = 0
    """Shards (among ``shards``) whose vectors were not read: unchanged since a verify read them and found them
    sound."""
    trusted_rows: int = 0
    """Their rows (among ``rows``)."""


@dataclass(frozen=True)
class Expected:
    """What the shards of one model in one space must be."""

    space: str
    dim: int | None = None
    """The architecture's width; binds only vectors of ``revision`` (other weights, a smaller variant given
    with ``--weights`` say, legitimately give another width: their shards only have to agree)."""
    revision: str | None = None
    """The pinned weights revision; ``None``: the width binds whatever the revision."""


def check_model_shards(
    directory: Path, expected: Expected, *, manifest_ids: set[str], record: Path | None = None
) -> ShardCheck:
    """:func:`check_shards` in ``expected.space``, plus the architecture's width where it binds."""
    check = check_shards(directory, manifest_ids=manifest_ids, space=expected.space, record=record)
    binds = expected.revision is None or check.model_revision == expected.revision
    if check.dim is None or expected.dim is None or not binds:
        return check
    if check.dim != expected.dim:
        model = directory.parent.name
        check.problems.append(Problem(
            None, "wrong_dim", f"shards in {directory} have {check.dim} columns, but {model} gives {expected.dim}; "
            f"move them aside and re-run embedding with {model}."))
    return check


def old_space_problems(directories: list[Path], space_of: dict[str, str]) -> list[Problem]:
    """One ``old_space`` problem per ``embeddings/<model>/<dataset>`` directory of shards written before
    spaces existed, saying what re-embeds it into ``space_of[model]`` and what to do with the old one."""
    problems = []
    for directory in directories:
        model, dataset = directory.parent.name, directory.name
        spaces = sorted({_text(attributes.get("space")) or "none" for attributes in _readable_attributes(directory)})
        target = space_of.get(model)
        move_on = (f"re-embed with `musictext embed {dataset} --model {model}` (it writes "
                   f"embeddings/{target}/{model}/{dataset}/), then delete or move {directory} aside"
                   if target else f"{model} is no longer an embedder here; delete or move {directory} aside")
        problems.append(Problem(
            None, "old_space",
            f"shards in {directory} are in space {', '.join(spaces)}, not in "
            f"{target or 'any current space'}: they were written before vectors named their space, by a "
            f"computation that is not Navidrome's; training and search never read them. To move on, {move_on}.",
        ))
    return problems


def _readable_attributes(directory: Path) -> Iterator[dict[str, object]]:
    """Attributes of each shard in ``directory``, passing over damaged ones (set aside as they are read)."""
    for path in shard_paths(directory):
        try:
            yield read_shard_attributes(path)
        except DamagedFileError as error:
            if not error.moved:
                raise


def check_shards(
    directory: Path, *, manifest_ids: set[str], dim: int | None = None, space: str | None = None,
    record: Path | None = None,
) -> ShardCheck:
    """Check every ``shard-*.h5`` in ``directory``; ``dim`` is the width the model promises, when known;
    ``space`` the space every shard must name, when known. ``record``: where this directory's record of shards
    with sound vectors is kept; the vectors of shards it names unchanged are not read, and it is rewritten with the
    shards found sound now. Without one, every vector is read."""
    check = ShardCheck(dim=dim)
    owner: dict[str, str] = {}
    recorded = read_record(record, CHECKS)
    sound: dict[str, FileStamp] = {}
    for path in shard_paths(directory):
        before = replace(check, problems=list(check.problems))
        check.shards += 1
        shard = _ShardChecker(path, check, owner, manifest_ids, space)
        try:
            stamp = FileStamp.of(path)
            shard.trusted = recorded.get(path.name) == stamp
            with h5py.File(path, "r") as handle:
                shard.check(handle)
        except OSError as error:
            if is_damage(error) and _set_aside(path, error, check, before, owner):
                continue
            shard.add(None, "unreadable_shard", f"cannot be read as HDF5 ({error})")
        if shard.sound:
            sound[path.name] = stamp
    check.item_ids = set(owner)
    if record is not None:
        write_record(record, CHECKS, sound)
    return check


def _set_aside(path: Path, error: OSError, check: ShardCheck, before: ShardCheck, owner: dict[str, str]) -> bool:
    """Move a damaged shard to quarantine and take back what was read of it before the damage showed (``before``:
    the check as it was), so its rows count as not embedded and the next embed run redoes them; False when it
    lies outside a data root (then it stays, reported as unreadable)."""
    try:
        set_aside(path, error)
    except DamagedFileError:
        return False
    for name in (f.name for f in fields(ShardCheck)):
        setattr(check, name, getattr(before, name))
    for item_id in [item_id for item_id, name in owner.items() if name == path.name]:
        del owner[item_id]
    return True


@dataclass
class _ShardChecker:
    path: Path
    result: ShardCheck
    owner: dict[str, str]
    """Item id → name of the first shard holding it, across the whole directory."""
    manifest_ids: set[str]
    space: str | None = None
    trusted: bool = False
    """Its vectors were found sound by an earlier verify and the file is unchanged since: they are not read."""
    sound: bool = False
    """Its vectors were all read (or trusted) and found finite and unit-norm."""

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
        if self.trusted:
            self.result.trusted_shards += 1
            self.result.trusted_rows += rows
            self.sound = True
            return
        problems = len(self.result.problems)
        self._check_rows(item_ids, embedding, rows)
        self.sound = len(self.result.problems) == problems

    def _check_attributes(self, handle: h5py.File) -> None:
        missing = [name for name in REQUIRED_ATTRIBUTES if name not in handle.attrs]
        if missing:
            self.add(None, "missing_attribute", f"lacks the attribute(s) {', '.join(missing)}")
        model, revision, space = (_text(handle.attrs.get(name)) for name in ("model", "model_revision", "space"))
        if self.space is not None and space != self.space:
            self.add(None, "wrong_space", f"names the space {space or '(none)'}, not {self.space} of its "
                                          "directory; vectors of different spaces must never be compared",
                     advice=f"move {self.path.name} aside and re-run embedding")
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
