"""Exact cosine search: a text query vector against every embedding of one audio model.

Shards are read in chunks of about 256 MiB (``chunk_rows`` rows when given) and only a running top-k is
kept, so memory stays bounded by one chunk however large the collection or wide the vectors (a MERT row is
300 kB). Hits are ordered by score, then item id, so equal scores always come back in the same order.
Exact search reads every row; an approximate index (FAISS) is not used here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from store.layout import DataRoot
from store.shards import Shard, iter_shards

_TINY = np.finfo(np.float32).tiny
CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class Hit:
    item_id: str
    dataset: str
    score: float
    shard: Path
    row: int


def model_shard_dirs(
    root: DataRoot, model: str, space: str, datasets: Sequence[str] | None = None
) -> list[Path]:
    """The shard directories of ``model`` in ``space``: every dataset it has embedded, or only ``datasets``."""
    base = root.path / "embeddings" / space / model
    if not base.is_dir():
        return []
    names = datasets if datasets is not None else sorted(p.name for p in base.iterdir() if p.is_dir())
    return [root.shard_dir(model, name, space) for name in names]


def _sort_key(hit: Hit) -> tuple[float, str, str, int]:
    return -hit.score, hit.item_id, str(hit.shard), hit.row


def _chunk_hits(shard: Shard, start: int, scores: np.ndarray, k: int) -> list[Hit]:
    """This chunk's best ``k`` in hit order; every row tying with the k-th score is a candidate."""
    if len(scores) > k:
        kth = scores[np.argpartition(-scores, k - 1)[:k]].min()
        rows = np.flatnonzero(scores >= kth)
    else:
        rows = np.arange(len(scores))
    hits = [
        Hit(shard.item_ids[start + row], shard.item_ids[start + row].split(":", 1)[0], float(scores[row]), shard.path,
            start + int(row))
        for row in rows
    ]
    return sorted(hits, key=_sort_key)[:k]


def _shard_scores(shard: Shard, query: np.ndarray, chunk_rows: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """Cosine of every row with the unit ``query``, one chunk at a time; a zero row scores 0."""
    chunk_rows = chunk_rows or max(1, CHUNK_BYTES // (4 * len(query)))
    for start in range(0, len(shard.item_ids), chunk_rows):
        rows = shard.embeddings(slice(start, start + chunk_rows))
        if rows.shape[1] != len(query):
            raise ValueError(
                f"shard {shard.path} holds {rows.shape[1]}-d embeddings but the query is {len(query)}-d; "
                "search one model's shards with a query from the text embedder trained for that model"
            )
        yield start, (rows @ query) / np.maximum(np.linalg.norm(rows, axis=1), _TINY)


def search(query: np.ndarray, shard_dirs: Sequence[Path], k: int = 10, chunk_rows: int | None = None, *,
           space: str | None = None) -> list[Hit]:
    """The ``k`` rows of all shards under ``shard_dirs`` most cosine-similar to ``query`` ([d]), best first.
    With ``space``, a shard of any other space is refused rather than compared with the query."""
    query = np.asarray(query, dtype=np.float32)
    if query.ndim != 1:
        raise ValueError(f"query must be one vector of shape [d], got shape {query.shape}")
    if k < 1 or (chunk_rows is not None and chunk_rows < 1):
        raise ValueError(f"k and chunk_rows must be at least 1, got k={k}, chunk_rows={chunk_rows}")
    if not np.any(query):
        raise ValueError("query is the zero vector; cosine similarity needs a direction")
    query = query / np.linalg.norm(query)
    best: list[Hit] = []
    searched = 0
    for directory in shard_dirs:
        for shard in iter_shards(directory):
            if space is not None and shard.space != space:
                raise ValueError(f"shard {shard.path} holds vectors of space {shard.space or '(none)'}, not {space}; "
                                 "a query is only comparable with vectors of its own space: move it aside")
            searched += 1
            for start, scores in _shard_scores(shard, query, chunk_rows):
                best = sorted(best + _chunk_hits(shard, start, scores, k), key=_sort_key)[:k]
    if not searched:
        raise ValueError(f"no shards under {', '.join(map(str, shard_dirs)) or '(no directories given)'}")
    return best
