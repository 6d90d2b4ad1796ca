"""Cosine search: a text query vector against every embedding of one audio model.

Exact search reads shards in chunks of about 256 MiB (``chunk_rows`` rows when given) and keeps only a running
top-k, so memory stays bounded by one chunk however large the collection or wide the vectors (a MERT row is
300 kB). Hits are ordered by score, then item id, so equal scores always come back in the same order.

:func:`search_collection` uses a dataset's FAISS index (:mod:`training.index`) for the shards it holds and
exact search for the shards added since, and says which it used for each dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from store.errors import InvalidInputError, MissingInputError
from store.layout import DataRoot
from store.shards import Shard, iter_shards, open_shard
from training.index import IndexedShards, usable_index

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


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[Hit]
    methods: list[str]
    """How each dataset was searched, e.g. ``"dsA: faiss hnsw (1,000 rows) + exact (1 newer shard)"``."""


def search(query: np.ndarray, shard_dirs: Sequence[Path], k: int = 10, chunk_rows: int | None = None, *,
           space: str | None = None) -> list[Hit]:
    """The ``k`` rows of all shards under ``shard_dirs`` most cosine-similar to ``query`` ([d]), best first,
    by exact search. With ``space``, a shard of any other space is refused rather than compared with the query."""
    return search_collection(query, shard_dirs, k, chunk_rows, space=space, use_index=False).hits


def search_collection(query: np.ndarray, shard_dirs: Sequence[Path], k: int = 10, chunk_rows: int | None = None, *,
                      space: str | None = None, use_index: bool = True) -> SearchOutcome:
    """As :func:`search`, through each dataset's FAISS index where one is usable (``use_index``)."""
    query = _unit_query(query, k, chunk_rows)
    best: list[Hit] = []
    methods = []
    searched = 0
    for directory in shard_dirs:
        indexed = usable_index(directory) if use_index else None
        held = set(indexed.shards) if indexed is not None else set()
        if indexed is not None:
            _check_space(directory, indexed.state.space, space)
            best = sorted(best + _index_hits(indexed, query, k), key=_sort_key)[:k]
        newer = [shard for shard in iter_shards(directory) if shard.path not in held]
        for shard in newer:
            _check_space(shard.path, shard.space, space)
            for start, scores in _shard_scores(shard, query, chunk_rows):
                best = sorted(best + _chunk_hits(shard, start, scores, k), key=_sort_key)[:k]
        searched += len(held) + len(newer)
        methods.append(_method(directory, indexed, len(newer)))
    if not searched:
        raise MissingInputError(f"no shards under {', '.join(map(str, shard_dirs)) or '(no directories given)'}")
    return SearchOutcome(best, methods)


def _unit_query(query: np.ndarray, k: int, chunk_rows: int | None) -> np.ndarray:
    query = np.asarray(query, dtype=np.float32)
    if query.ndim != 1:
        raise ValueError(f"query must be one vector of shape [d], got shape {query.shape}")
    if k < 1 or (chunk_rows is not None and chunk_rows < 1):
        raise ValueError(f"k and chunk_rows must be at least 1, got k={k}, chunk_rows={chunk_rows}")
    if not np.any(query):
        raise ValueError("query is the zero vector; cosine similarity needs a direction")
    return query / np.linalg.norm(query)


def _check_space(where: Path, found: str, space: str | None) -> None:
    if space is not None and found != space:
        raise InvalidInputError(f"shard {where} holds vectors of space {found or '(none)'}, not {space}; "
                         "a query is only comparable with vectors of its own space: move it aside")


def _index_hits(indexed: IndexedShards, query: np.ndarray, k: int) -> list[Hit]:
    if indexed.state.dim != len(query):
        raise ValueError(f"the index beside {indexed.shards[0].parent} holds {indexed.state.dim}-d vectors but the "
                         f"query is {len(query)}-d; search one model's shards with a query from its text embedder")
    scores, positions = indexed.index.search(query[None], k)
    shards: dict[int, Shard] = {}
    hits = []
    for score, position in zip(scores[0], positions[0], strict=True):
        if position < 0:
            continue
        number = int(np.searchsorted(indexed.offsets, position, side="right")) - 1
        shard = shards.setdefault(number, open_shard(indexed.shards[number]))
        row = int(position - indexed.offsets[number])
        item_id = shard.item_ids[row]
        hits.append(Hit(item_id, item_id.split(":", 1)[0], float(score), shard.path, row))
    return hits


def _method(directory: Path, indexed: IndexedShards | None, newer: int) -> str:
    parts = [f"faiss {indexed.state.kind} ({indexed.state.rows:,} rows)"] if indexed is not None else []
    if newer or indexed is None:
        parts.append(f"exact ({newer} {'newer ' if indexed is not None else ''}shard{'s' if newer != 1 else ''})")
    return f"{directory.name}: {' + '.join(parts)}"
