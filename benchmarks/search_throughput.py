"""Queries/s and recall@10 of exact numpy search, FAISS flat and FAISS approximate indexes, side by side.

For each collection size it draws random unit vectors (``--dim``, 1536 as MuQ's; ``--dim 76800`` for MERT at a
size that fits in memory; ``--clusters N`` draws them around N centres instead, closer to real embeddings),
builds each index the way :mod:`training.index` does, and runs ``--queries`` unit queries one at a time, as
``musictext search`` and the service's users ask them, ``k = 10``:

* ``numpy exact``: chunked matrix products and ``argpartition``, what :func:`training.search.search` does with
  the shards already in memory (the reference: recall 1 and the ratio's denominator);
* ``faiss flat``: ``IndexFlatIP`` (exact, BLAS);
* ``faiss ivf`` / ``faiss hnsw``: ``IndexIVFFlat`` (nlist ≈ 4·√n, nprobe = nlist/8) and ``IndexHNSWFlat``
  (M = 32, efSearch = 128), with their recall@10 against exact search.

Random vectors have no clusters, the hardest case for approximate indexes: real embeddings usually give them a
higher recall at the same settings (``--clusters``). Build times are printed too. ::

    python benchmarks/search_throughput.py --sizes 100000 1000000 --dim 1536
    python benchmarks/search_throughput.py --sizes 20000 --dim 76800 --kinds flat
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from training.index import KINDS, new_index

CHUNK_ROWS = 65_536


def unit_rows(rows: int, dim: int, seed: int, clusters: int = 0) -> np.ndarray:
    """Random unit vectors; with ``clusters``, each one a random centre plus noise of half its size."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((clusters, dim), dtype=np.float32) if clusters else None
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, CHUNK_ROWS):
        block = rng.standard_normal((min(CHUNK_ROWS, rows - start), dim), dtype=np.float32)
        if centres is not None:
            block = centres[rng.integers(clusters, size=len(block))] + 0.5 * block
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def numpy_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top 10 per query, a chunk of rows at a time, as exact search reads shards."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), CHUNK_ROWS):
        scores = queries @ vectors[start:start + CHUNK_ROWS].T
        top = np.argpartition(-scores, min(10, scores.shape[1] - 1), axis=1)[:, :10]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        best_rows = np.concatenate([best_rows, top + start], axis=1)
        keep = np.argsort(-best_scores, axis=1)[:, :10]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
    return best_rows


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


def one_at_a_time(search, queries: np.ndarray) -> tuple[np.ndarray, float]:  # noqa: ANN001
    """Each query's top-10 rows, searched alone, and the seconds per query."""
    began = time.perf_counter()
    found = np.concatenate([search(query[None]) for query in queries])
    return found, (time.perf_counter() - began) / len(queries)


def build(kind: str, vectors: np.ndarray):  # noqa: ANN201 (faiss has no type stubs)
    index, _ = new_index(faiss, kind, vectors.shape[1], len(vectors))
    if kind == "ivf":
        sample = np.random.default_rng(0).choice(len(vectors), min(len(vectors), 39 * index.nlist * 4), replace=False)
        index.train(vectors[np.sort(sample)])
    index.add(vectors)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--clusters", type=int, default=0, help="draw vectors around this many centres")
    args = parser.parse_args()
    data = f"around {args.clusters} centres" if args.clusters else "random"
    table = Table(title=f"top-10 cosine search, {args.dim}-d {data} unit vectors, {args.queries} queries one at a "
                        f"time, {faiss.omp_get_max_threads()} threads")
    for column in ("rows", "method", "build s", "queries/s", "vs numpy", "recall@10"):
        table.add_column(column, justify="left" if column == "method" else "right")
    queries = unit_rows(args.queries, args.dim, seed=1, clusters=args.clusters)
    for size in args.sizes:
        vectors = unit_rows(size, args.dim, seed=2, clusters=args.clusters)
        truth, numpy_s = one_at_a_time(lambda query, v=vectors: numpy_top10(v, query), queries)
        table.add_row(f"{size:,}", "numpy exact", "-", f"{1 / numpy_s:,.1f}", "1.00×", "1.000")
        for kind in args.kinds:
            began = time.perf_counter()
            index = build(kind, vectors)
            build_s = time.perf_counter() - began
            found, search_s = one_at_a_time(lambda query, index=index: index.search(query, 10)[1], queries)
            table.add_row(f"{size:,}", f"faiss {kind}", f"{build_s:.1f}", f"{1 / search_s:,.1f}",
                          f"{numpy_s / search_s:.2f}×", f"{recall(found, truth):.3f}")
            del index
        del vectors
    Console().print(table)


if __name__ == "__main__":
    main()
