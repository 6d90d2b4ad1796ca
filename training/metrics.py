"""Cross-modal retrieval metrics: how well text finds its music and music finds its text.

Row ``i`` of the text matrix and row ``i`` of the audio matrix are one matching pair; every other row of the
other modality is a distractor. Similarities are computed a block of rows at a time so that a 50k x 50k
matrix never exists whole (a 1024-row block of 50k candidates is 200 MB in float32).
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 5, 10)
_CHUNK_ROWS = 1024


def ranks(similarity: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each row's true candidate (column ``targets[i]``, by default ``i``).

    Ties are broken pessimistically: every other candidate scoring *equal to* the true one counts as ranked
    above it, so a degenerate model that scores everything alike gets rank n, not 1.
    """
    similarity = np.asarray(similarity)
    rows = np.arange(similarity.shape[0])
    targets = rows if targets is None else np.asarray(targets)
    true_scores = similarity[rows, targets][:, None]
    return np.count_nonzero(similarity >= true_scores, axis=1)


def unit_rows(vectors: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to length 1 (at least float32), so dot products are cosines; a zero row has no direction."""
    vectors = np.asarray(vectors)
    vectors = vectors.astype(np.result_type(vectors.dtype, np.float32), copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name} has a zero vector at row {int(np.flatnonzero(norms == 0)[0])}; cosine is undefined")
    return vectors / norms


def _chunked_ranks(queries: np.ndarray, candidates: np.ndarray, chunk_rows: int) -> np.ndarray:
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk_rows):
        block = queries[start:start + chunk_rows] @ candidates.T
        out[start:start + len(block)] = ranks(block, np.arange(start, start + len(block)))
    return out


def retrieval_ranks(
    text: np.ndarray, audio: np.ndarray, *, chunk_rows: int = _CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the true match for every text query (text→music) and every audio query (music→text).

    Vectors are L2-normalised here, so the score is cosine similarity whatever their scale.
    """
    text, audio = np.asarray(text), np.asarray(audio)
    if text.ndim != 2 or text.shape != audio.shape:
        raise ValueError(f"text and audio must be 2-D with the same shape, got {text.shape} and {audio.shape}")
    if len(text) == 0:
        raise ValueError("retrieval needs at least one text/audio pair")
    text, audio = unit_rows(text, "text"), unit_rows(audio, "audio")
    return _chunked_ranks(text, audio, chunk_rows), _chunked_ranks(audio, text, chunk_rows)


def recall_at(rank: np.ndarray, k: int) -> float:
    """Fraction of queries whose true match is among the top ``k``."""
    return float(np.mean(rank <= k))


def summarise_ranks(prefix: str, rank: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Recall@K, mean reciprocal rank and median rank of one direction, keys prefixed (``t2m_``, ``m2t_``)."""
    summary = {f"{prefix}R@{k}": recall_at(rank, k) for k in ks}
    summary[f"{prefix}MRR"] = float(np.mean(1.0 / rank))
    summary[f"{prefix}median_rank"] = float(np.median(rank))
    return summary


def retrieval_metrics(
    text: np.ndarray, audio: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS, *, chunk_rows: int = _CHUNK_ROWS
) -> dict[str, float]:
    """Text→music (``t2m_``) and music→text (``m2t_``) Recall@K, MRR and median rank (1-based) over n pairs.

    ``candidates`` (n) and ``chance_R@K`` (K/n, what random scores would get) are included so that a number
    is never read without its scale. Ties with the true match count against it (see ``ranks``).
    """
    t2m, m2t = retrieval_ranks(text, audio, chunk_rows=chunk_rows)
    n = len(t2m)
    return {
        **summarise_ranks("t2m_", t2m, ks),
        **summarise_ranks("m2t_", m2t, ks),
        "candidates": float(n),
        **{f"chance_R@{k}": min(k / n, 1.0) for k in ks},
    }
