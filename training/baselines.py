"""The seed baselines: what text → audio retrieval gets without contrastive training.

The systems musictext grew from compared three alignments; the contrastive heads are the third. Every
evaluation report scores the other two next to them, fitted on the same training split:

* **prototype**: one mean audio vector per tag (over the training items carrying it); a query is routed to the
  tag whose prompt ("a {tag} track") is closest to it in the sentence encoder's space and answered with that
  tag's prototype. Needs tags; a corpus without any has no prototype baseline.
* **linear**: ridge regression from the sentence encoder's pooled vector (with a bias) to the audio vector,
  closed form, its penalty chosen on the validation pairs by text→music Recall@10.

Both expose ``encode(texts)`` like :class:`training.model.TextEmbedder`, so the report scores them with the
same metrics and zero-shot confusion matrices, and ``project(sentence_vectors)``, so an evaluation that scores
both encodes its texts with the sentence encoder once. The training items are read in blocks and summarised as they
stream (per-tag sums, ``XᵀX`` and ``XᵀY``), so a million items or MERT's 76,800-d vectors need memory for the
summaries only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.data import Item, ShardReader
from training.metrics import retrieval_metrics
from training.model import TextEmbedder, mean_pool
from training.zero_shot import prompt_texts

BLOCK = 512
RIDGE_PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
SELECTION = "t2m_R@10"


class SentenceEncoder:
    """The pooled, L2-normalised sentence vectors of a text embedder's encoder (no head): all-MiniLM-L6-v2 as
    sentence-transformers uses it."""

    def __init__(self, embedder: TextEmbedder) -> None:
        self.embedder = embedder

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        model = self.embedder
        parts = []
        for start in range(0, len(texts), batch_size):
            batch = model.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                    max_length=model.config.max_length, return_tensors="pt").to(model.device)
            tokens = model.encoder(**batch).last_hidden_state
            parts.append(mean_pool(tokens, batch["attention_mask"]).float().cpu().numpy())
        return _unit(np.concatenate(parts))


@dataclass
class PrototypeBaseline:
    sentences: SentenceEncoder
    tags: list[str]
    prompts: np.ndarray
    """Sentence vectors of each tag's prompt, ``[tags, hidden]``."""
    prototypes: np.ndarray
    """Unit mean audio vector per tag, ``[tags, dim]``."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.project(self.sentences.encode(texts))

    def project(self, sentence_vectors: np.ndarray) -> np.ndarray:
        """The prototype of the tag whose prompt is nearest to each sentence vector."""
        return self.prototypes[np.argmax(sentence_vectors @ self.prompts.T, axis=1)]


@dataclass
class LinearBaseline:
    sentences: SentenceEncoder
    weights: np.ndarray
    """``[hidden + 1, dim]``: the map from a sentence vector with a trailing 1 to the audio space."""
    penalty: float

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.project(self.sentences.encode(texts))

    def project(self, sentence_vectors: np.ndarray) -> np.ndarray:
        """The ridge map of each sentence vector, as a unit vector of the audio space."""
        return _unit(_with_bias(sentence_vectors) @ self.weights)


Baseline = PrototypeBaseline | LinearBaseline


def fit_baselines(train: Sequence[Item], sentences: SentenceEncoder, val_texts: Sequence[str],
                  val_audio: np.ndarray) -> dict[str, Baseline]:
    """The baselines that the training items allow, by report name."""
    summary = _summarise(train, sentences)
    fitted: dict[str, Baseline] = {}
    if summary.tag_sums:
        tags = sorted(summary.tag_sums)
        prototypes = _unit(np.stack([summary.tag_sums[tag] for tag in tags]))
        fitted["prototype (baseline)"] = PrototypeBaseline(sentences, tags, sentences.encode(prompt_texts(tags)),
                                                           prototypes)
    fitted["linear (baseline)"] = _best_ridge(summary, sentences, val_texts, val_audio)
    return fitted


@dataclass
class _Summary:
    tag_sums: dict[str, np.ndarray]
    gram: np.ndarray
    """``XᵀX`` of the sentence vectors with bias."""
    cross: np.ndarray
    """``XᵀY``."""


def _summarise(train: Sequence[Item], sentences: SentenceEncoder) -> _Summary:
    """One pass over the training items: every text of an item is a pair with its audio vector."""
    reader = ShardReader()
    tag_sums: dict[str, np.ndarray] = {}
    gram = cross = None
    try:
        for start in range(0, len(train), BLOCK):
            items = list(train[start:start + BLOCK])
            audio = _unit(reader.read(items))
            for item, vector in zip(items, audio, strict=True):
                for tag in item.tags:
                    tag_sums[tag] = tag_sums.get(tag, 0) + vector
            owners = [index for index, item in enumerate(items) for _ in item.texts]
            x = _with_bias(sentences.encode([text for item in items for text in item.texts]))
            y = audio[owners]
            gram = x.T @ x if gram is None else gram + x.T @ x
            cross = x.T @ y if cross is None else cross + x.T @ y
    finally:
        reader.close()
    if gram is None:
        raise ValueError("no training items to fit the baselines on")
    return _Summary(tag_sums, gram, cross)


def _best_ridge(summary: _Summary, sentences: SentenceEncoder, val_texts: Sequence[str],
                val_audio: np.ndarray) -> LinearBaseline:
    val = _with_bias(sentences.encode(val_texts))
    best: tuple[float, LinearBaseline] | None = None
    for penalty in RIDGE_PENALTIES:
        regulariser = penalty * np.eye(len(summary.gram))
        regulariser[-1, -1] = 0.0  # the bias is not penalised
        weights = np.linalg.solve(summary.gram + regulariser, summary.cross).astype(np.float32)
        score = retrieval_metrics(_unit(val @ weights), val_audio)[SELECTION]
        if best is None or score > best[0]:
            best = (score, LinearBaseline(sentences, weights, penalty))
    return best[1]


def _unit(rows: np.ndarray) -> np.ndarray:
    """float32 rows of length 1 (a zero row stays zero: it matches nothing)."""
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), np.finfo(np.float32).tiny)


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)]).astype(np.float64)
