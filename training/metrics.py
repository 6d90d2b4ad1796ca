"""Cross-modal retrieval metrics: how well text finds its music and music finds its text.

Row ``i`` of the text matrix and row ``i`` of the audio matrix are one matching pair; every other row of the
other modality is a distractor. A benchmark whose items each have several captions (the Song Describer
Dataset) gives ``owners`` instead: text ``i`` describes audio ``owners[i]``, a text query has one right item and
an item query has several right texts, found as soon as the first of them is. Similarities are computed a block
of rows at a time so that a 50k x 50k matrix never exists whole (a 1024-row block of 50k candidates is 200 MB
in float32).
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


def _chunked_ranks(queries: np.ndarray, candidates: np.ndarray, targets: np.ndarray, chunk_rows: int) -> np.ndarray:
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk_rows):
        block = queries[start:start + chunk_rows] @ candidates.T
        out[start:start + len(block)] = ranks(block, targets[start:start + len(block)])
    return out


def _first_of_many_ranks(queries: np.ndarray, candidates: np.ndarray, owners: np.ndarray,
                         chunk_rows: int) -> np.ndarray:
    """Rank of each query's best-scoring right candidate (candidate ``j`` is right for query ``owners[j]``): one
    more than the wrong candidates scoring at least as high, so ties count against the query as in ``ranks``.
    A block's right candidates are gathered through the owners' sort order, so no block-sized mask is made."""
    order = np.argsort(owners, kind="stable")
    sorted_owners = owners[order]
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk_rows):
        block = queries[start:start + chunk_rows] @ candidates.T
        rows = np.arange(start, start + len(block))
        columns = order[np.searchsorted(sorted_owners, start):np.searchsorted(sorted_owners, rows[-1], "right")]
        right = owners[columns][None, :] == rows[:, None]
        scores = block[:, columns]
        best = np.where(right, scores, -np.inf).max(axis=1, keepdims=True)
        right_at_best = np.count_nonzero(right & (scores >= best), axis=1)
        out[start:start + len(block)] = np.count_nonzero(block >= best, axis=1) - right_at_best + 1
    return out


def _check_owners(owners: np.ndarray, texts: int, items: int) -> np.ndarray:
    owners = np.asarray(owners, dtype=np.int64)
    if owners.shape != (texts,):
        raise ValueError(f"owners must name one item per text: {texts} texts, owners of shape {owners.shape}")
    if texts and (owners.min() < 0 or owners.max() >= items):
        raise ValueError(f"owners must be item rows in 0..{items - 1}")
    described = np.bincount(owners, minlength=items)
    if np.any(described == 0):
        raise ValueError(f"item row {int(np.flatnonzero(described == 0)[0])} has no text: it could never be found")
    return owners


def retrieval_ranks(
    text: np.ndarray, audio: np.ndarray, *, owners: np.ndarray | None = None, chunk_rows: int = _CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the right match for every text query (text→music) and every audio query (music→text); with
    ``owners``, text ``i`` describes audio ``owners[i]`` and an audio query's rank is that of its best-ranked text.

    Vectors are L2-normalised here, so the score is cosine similarity whatever their scale.
    """
    text, audio = np.asarray(text), np.asarray(audio)
    if text.ndim != 2 or audio.ndim != 2 or text.shape[1] != audio.shape[1]:
        raise ValueError(f"text and audio must be 2-D with the same width, got {text.shape} and {audio.shape}")
    if owners is None and len(text) != len(audio):
        raise ValueError(f"text and audio must have the same shape, got {text.shape} and {audio.shape}")
    if len(text) == 0:
        raise ValueError("retrieval needs at least one text/audio pair")
    owners = np.arange(len(text)) if owners is None else _check_owners(owners, len(text), len(audio))
    text, audio = unit_rows(text, "text"), unit_rows(audio, "audio")
    return _chunked_ranks(text, audio, owners, chunk_rows), _first_of_many_ranks(audio, text, owners, chunk_rows)


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
    text: np.ndarray, audio: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS, *, owners: np.ndarray | None = None,
    chunk_rows: int = _CHUNK_ROWS
) -> dict[str, float]:
    """Text→music (``t2m_``) and music→text (``m2t_``) Recall@K, MRR and median rank (1-based): over n pairs, or
    with ``owners`` over texts each describing one item (``retrieval_ranks``).

    ``candidates`` (the audio rows a text is ranked among) and ``chance_R@K`` (K/candidates, what random scores
    would get text→music) are included so that a number is never read without its scale; with ``owners`` so is
    ``m2t_candidates`` (the texts an item is ranked among). Ties with the right match count against it.
    """
    t2m, m2t = retrieval_ranks(text, audio, owners=owners, chunk_rows=chunk_rows)
    n = len(m2t)
    texts = {} if owners is None else {"m2t_candidates": float(len(t2m))}
    return {
        **summarise_ranks("t2m_", t2m, ks),
        **summarise_ranks("m2t_", m2t, ks),
        "candidates": float(n),
        **texts,
        **{f"chance_R@{k}": min(k / n, 1.0) for k in ks},
    }
