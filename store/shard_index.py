"""Where each item's vector is among one model's shards of one dataset and space.

Training and the corpus export both read vectors by item id. Shards are append-only, so an item embedded again
(after ``--force`` or a re-embed) has rows in several shards; the newest shard's row is the one that counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.errors import InvalidInputError, MissingInputError
from store.layout import DataRoot
from store.shards import open_shard, shard_paths


@dataclass(frozen=True)
class VectorLocations:
    locations: dict[str, tuple[Path, int]]
    """Item id → (shard, row)."""
    dim: int
    attrs: dict[str, Any]
    """The newest shard's attributes (model revision, enrichment, …)."""


def vector_locations(root: DataRoot, model: str, dataset: str, space: str) -> VectorLocations:
    """Item id → (shard, row) for one model, space and dataset, and the vectors' size; a later shard wins a
    repeat. A shard that names another space is refused (vectors of two spaces never mix), and so are shards of
    different sizes (different model revisions)."""
    directory = root.shard_dir(model, dataset, space)
    paths = shard_paths(directory)
    if not paths:
        hint = _old_space_hint(root, model, dataset)
        raise MissingInputError(f"no {model} embeddings in space {space} for {dataset} under {directory}; run "
                                f"`musictext embed {dataset} --model {model}` first{hint}")
    locations: dict[str, tuple[Path, int]] = {}
    dims = set()
    for path in paths:
        shard = open_shard(path)
        if shard.space != space:
            raise InvalidInputError(f"shard {path} holds vectors of space {shard.space or '(none)'}, not {space}; "
                                    "vectors of different spaces cannot be used together: move it aside and re-embed")
        dims.add(int(shard.attrs["dim"]))
        locations.update((item_id, (path, row)) for row, item_id in enumerate(shard.item_ids))
    if len(dims) != 1:
        raise InvalidInputError(f"the {model} shards of {dataset} under {directory} have different sizes "
                                f"{sorted(dims)}; they were made by different model revisions and cannot be used "
                                "together")
    return VectorLocations(locations, dims.pop(), dict(shard.attrs))


def _old_space_hint(root: DataRoot, model: str, dataset: str) -> str:
    old = [d for d in root.legacy_shard_dirs(dataset) if d.parent.name == model]
    return f" (the shards under {old[0]} are of an older space and are not used)" if old else ""
