"""Exact cosine search over real HDF5 shards with known vectors: order, ties, chunking, several datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from store.layout import DataRoot
from store.shards import ShardAttributes, ShardWriter
from training.search import Hit, model_shard_dirs, search

QUERY = np.array([1, 0, 0, 0], dtype=np.float32)
SPACE = "space-1"


def _at(cosine: float, scale: float = 1.0) -> list[float]:
    """A 4-d vector whose cosine with QUERY is ``cosine``."""
    return [scale * cosine, scale * float(np.sqrt(1 - cosine**2)), 0.0, 0.0]


def _write_shard(directory: Path, rows: dict[str, list[float]], dim: int = 4, space: str = SPACE) -> Path:
    attrs = ShardAttributes("m", "r1", dim, "none", 16000, 10.0, 10.0, "0.1.0", space=space)
    with ShardWriter(directory, attrs) as writer:
        writer.append(list(rows), np.array(list(rows.values()), dtype=np.float32))
    assert writer.path is not None
    return writer.path


@pytest.fixture()
def shards(tmp_path: Path) -> DataRoot:
    """Two datasets, dsA in two shards; b, e and g tie at 0.5; i is stored at 3x length."""
    root = DataRoot(tmp_path)
    _write_shard(root.shard_dir("m", "dsA", SPACE), {"dsA:a": _at(0.9), "dsA:b": _at(0.5), "dsA:c": _at(-1.0)})
    _write_shard(root.shard_dir("m", "dsA", SPACE), {"dsA:e": _at(0.5), "dsA:d": _at(0.7)})
    _write_shard(root.shard_dir("m", "dsB", SPACE), {"dsB:f": _at(0.95), "dsB:g": _at(0.5), "dsB:h": _at(0.1),
                                                     "dsB:i": _at(0.8, scale=3.0)})
    _write_shard(root.shard_dir("other", "dsA", SPACE), {"dsA:z": _at(1.0)})
    _write_shard(root.shard_dir("m", "dsA", "space-0"), {"dsA:old": _at(1.0)}, space="space-0")
    return root


FULL_ORDER = ["dsB:f", "dsA:a", "dsB:i", "dsA:d", "dsA:b", "dsA:e", "dsB:g", "dsB:h", "dsA:c"]


def test_top_k_order_scores_and_locations(shards: DataRoot) -> None:
    hits = search(QUERY, model_shard_dirs(shards, "m", SPACE), k=5)
    assert [hit.item_id for hit in hits] == FULL_ORDER[:5]
    assert [hit.score for hit in hits] == pytest.approx([0.95, 0.9, 0.8, 0.7, 0.5], abs=1e-6)
    assert hits[3] == Hit("dsA:d", "dsA", hits[3].score, shards.shard_dir("m", "dsA", SPACE) / "shard-00001.h5", 1)
    assert hits[0].dataset == "dsB"
    assert hits[0].shard == shards.shard_dir("m", "dsB", SPACE) / "shard-00000.h5"


def test_ties_are_broken_by_item_id(shards: DataRoot) -> None:
    hits = search(QUERY, model_shard_dirs(shards, "m", SPACE), k=6)
    assert [hit.item_id for hit in hits[4:]] == ["dsA:b", "dsA:e"]


def test_k_larger_than_the_collection_returns_everything(shards: DataRoot) -> None:
    hits = search(QUERY, model_shard_dirs(shards, "m", SPACE), k=100)
    assert [hit.item_id for hit in hits] == FULL_ORDER


@pytest.mark.parametrize("chunk_rows", [1, 2, 3])
def test_chunking_gives_the_same_hits(shards: DataRoot, chunk_rows: int) -> None:
    dirs = model_shard_dirs(shards, "m", SPACE)
    for k in (1, 5, 6, 9):
        assert search(QUERY, dirs, k=k, chunk_rows=chunk_rows) == search(QUERY, dirs, k=k)


def test_query_is_normalised(shards: DataRoot) -> None:
    dirs = model_shard_dirs(shards, "m", SPACE)
    assert search(4 * QUERY, dirs, k=3) == search(QUERY, dirs, k=3)


def test_model_shard_dirs_lists_only_that_model_in_that_space(shards: DataRoot) -> None:
    assert model_shard_dirs(shards, "m", SPACE) == [shards.shard_dir("m", "dsA", SPACE),
                                                    shards.shard_dir("m", "dsB", SPACE)]
    assert model_shard_dirs(shards, "m", SPACE, datasets=["dsB"]) == [shards.shard_dir("m", "dsB", SPACE)]
    assert search(QUERY, model_shard_dirs(shards, "other", SPACE), k=3)[0].item_id == "dsA:z"
    assert model_shard_dirs(shards, "m", "space-0") == [shards.shard_dir("m", "dsA", "space-0")]
    assert model_shard_dirs(shards, "m", "space-2", datasets=["dsA"]) == []


def test_model_shard_dirs_of_a_space_without_shards_is_empty(shards: DataRoot) -> None:
    assert model_shard_dirs(shards, "m", "space-2") == []


def test_search_in_a_space_refuses_a_shard_of_another_space(shards: DataRoot) -> None:
    dirs = model_shard_dirs(shards, "m", SPACE)
    assert [hit.item_id for hit in search(QUERY, dirs, k=9, space=SPACE)] == FULL_ORDER
    stray = _write_shard(shards.shard_dir("m", "dsB", SPACE), {"dsB:stray": _at(1.0)}, space="space-0")
    with pytest.raises(ValueError, match=f"shard {stray} holds vectors of space space-0, not {SPACE}"):
        search(QUERY, dirs, k=3, space=SPACE)
    unnamed = _write_shard(shards.shard_dir("m", "dsC", SPACE), {"dsC:x": _at(1.0)}, space="")
    with pytest.raises(ValueError, match=rf"shard {unnamed} holds vectors of space \(none\)"):
        search(QUERY, [shards.shard_dir("m", "dsC", SPACE)], k=3, space=SPACE)


def test_dimension_mismatch_names_the_shard(shards: DataRoot) -> None:
    odd = _write_shard(shards.shard_dir("m", "dsC", SPACE), {"dsC:x": [1.0, 0.0, 0.0]}, dim=3)
    with pytest.raises(ValueError, match=f"{odd}.*3-d.*4-d"):
        search(QUERY, model_shard_dirs(shards, "m", SPACE), k=3)


def test_bad_arguments_are_refused(shards: DataRoot, tmp_path: Path) -> None:
    dirs = model_shard_dirs(shards, "m", SPACE)
    with pytest.raises(ValueError, match="k=0"):
        search(QUERY, dirs, k=0)
    with pytest.raises(ValueError, match="chunk_rows=0"):
        search(QUERY, dirs, chunk_rows=0)
    with pytest.raises(ValueError, match="one vector"):
        search(np.ones((2, 4)), dirs)
    with pytest.raises(ValueError, match="zero vector"):
        search(np.zeros(4), dirs)
    with pytest.raises(FileNotFoundError, match="no shards"):
        search(QUERY, [tmp_path / "nowhere"])
