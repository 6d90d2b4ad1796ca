"""Evaluation figures as PNG files: similarity distributions, a 2-D map of both modalities, recall vs K and
confusion matrices.

Figures are drawn with matplotlib's object API on its Agg canvas (no pyplot, no display, no global state) and
written atomically, so a report never links a half-written image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from store.atomic import atomic_path
from training.metrics import recall_at, retrieval_ranks, unit_rows

MAX_CURVE_K = 100
_MAX_COLOURS = 10
_OTHER = "other"
_METHOD_NAMES = {"tsne": "t-SNE", "pca": "PCA"}
_DPI = 120


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def similarity_samples(
    text: np.ndarray, audio: np.ndarray, *, max_pairs: int = 100_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of every matching pair (row i with row i) and of up to ``max_pairs`` random non-matching pairs.

    Non-matching pairs are sampled (with replacement) because all n(n-1) of them would not fit for large n.
    """
    text, audio = unit_rows(text, "text"), unit_rows(audio, "audio")
    n = len(text)
    matching = np.einsum("ij,ij->i", text, audio)
    if n < 2:
        return matching, np.empty(0, dtype=matching.dtype)
    rng = np.random.default_rng(seed)
    count = min(max_pairs, n * (n - 1))
    rows = rng.integers(0, n, count)
    cols = (rows + rng.integers(1, n, count)) % n
    return matching, np.einsum("ij,ij->i", text[rows], audio[cols])


def plot_similarity_distribution(
    text: np.ndarray, audio: np.ndarray, path: Path, *, max_pairs: int = 100_000, seed: int = 0
) -> Path:
    """Histogram densities of cosine similarity for matching vs non-matching text/audio pairs."""
    matching, other = similarity_samples(text, audio, max_pairs=max_pairs, seed=seed)
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    bins = np.linspace(-1, 1, 81)
    axes.hist(other, bins=bins, density=True, alpha=0.6, label=f"non-matching ({len(other)} sampled)")
    axes.hist(matching, bins=bins, density=True, alpha=0.6, label=f"matching ({len(matching)})")
    axes.set(xlabel="cosine similarity", ylabel="density", title="Text/audio cosine similarity")
    axes.legend()
    return _save(figure, path)


def _project(points: np.ndarray, method: Literal["tsne", "pca"], seed: int) -> np.ndarray:
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(points)
    perplexity = float(np.clip((len(points) - 1) / 3, 1.0, 30.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def _colour_groups(labels: Sequence[str]) -> list[str]:
    """Each item's legend group: its label if among the ten most frequent (one colour each), else "other"."""
    common = {label for label, _ in Counter(labels).most_common(_MAX_COLOURS)}
    return [label if label in common else _OTHER for label in labels]


def plot_embedding_map(
    text: np.ndarray,
    audio: np.ndarray,
    labels: Sequence[str],
    path: Path,
    *,
    method: Literal["tsne", "pca"] = "tsne",
    max_items: int = 2000,
    seed: int = 0,
) -> Path:
    """Text and audio vectors of the same items in one 2-D map, coloured by ``labels[i]`` (e.g. a genre tag),
    circles for audio and triangles for text: a trained embedder puts each text near its audio.

    t-SNE by default with perplexity adapted to the number of points; at most ``max_items`` items (a seeded
    sample) because t-SNE is quadratic.
    """
    if not len(text) == len(audio) == len(labels):
        raise ValueError(f"{len(text)} text vectors, {len(audio)} audio vectors and {len(labels)} labels differ")
    keep = np.sort(np.random.default_rng(seed).permutation(len(text))[:max_items])
    n = len(keep)
    xy = _project(np.concatenate([unit_rows(text[keep], "text"), unit_rows(audio[keep], "audio")]), method, seed)
    groups = np.array(_colour_groups([labels[i] for i in keep]))
    figure = Figure(figsize=(7, 6))
    axes = figure.add_subplot()
    for index, group in enumerate(sorted(set(groups), key=lambda g: (g == _OTHER, g))):
        colour, mask = "lightgrey" if group == _OTHER else f"C{index}", groups == group
        axes.scatter(*xy[:n][mask].T, s=12, marker="o", color=colour, label=group)
        axes.scatter(*xy[n:][mask].T, s=14, marker="^", color=colour, alpha=0.6)
    axes.scatter([], [], marker="o", color="black", label="audio")
    axes.scatter([], [], marker="^", color="black", label="text")
    axes.set(title=f"{_METHOD_NAMES[method]} map of {n} text/audio pairs", xticks=[], yticks=[])
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(figure, path)


@dataclass(frozen=True)
class RecallCurve:
    """Recall@K for K = 1..min(n, 100) in both directions, and what random scores would get (K/n)."""

    ks: np.ndarray
    t2m: np.ndarray
    m2t: np.ndarray
    chance: np.ndarray
    candidates: int


def recall_curve(text: np.ndarray, audio: np.ndarray, max_k: int = MAX_CURVE_K) -> RecallCurve:
    t2m, m2t = retrieval_ranks(text, audio)
    ks = np.arange(1, min(len(t2m), max_k) + 1)
    return RecallCurve(
        ks, np.array([recall_at(t2m, k) for k in ks]), np.array([recall_at(m2t, k) for k in ks]), ks / len(t2m),
        len(t2m),
    )


def plot_recall_curve(curve: RecallCurve, path: Path) -> Path:
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    axes.plot(curve.ks, curve.t2m, label="text → music")
    axes.plot(curve.ks, curve.m2t, label="music → text")
    axes.plot(curve.ks, curve.chance, linestyle="--", color="grey", label="chance (K/n)")
    axes.set(xlabel="K", ylabel="Recall@K", ylim=(0, 1.02), title=f"Recall vs K among {curve.candidates} candidates")
    axes.legend(loc="center right")
    return _save(figure, path)


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> Path:
    """Heat map of ``confusion[true][predicted]``, each cell annotated with its count."""
    matrix = np.asarray(confusion)
    size = max(4.0, 0.45 * len(labels) + 2)
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    axes.set_xticks(range(len(labels)), labels, rotation=90)
    axes.set_yticks(range(len(labels)), labels)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axes.text(col, row, str(count), ha="center", va="center", fontsize="small", color=colour)
    return _save(figure, path)
