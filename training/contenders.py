"""What an evaluation scores side by side: each run's best checkpoint, an untrained embedder of its head (what
training bought at all) and the two seed baselines of :mod:`training.baselines`, prototype and linear, fitted on
the runs' training split (what contrastive training bought over a tag lookup and a ridge map).

Every contender embeds a :class:`TextSet`. The baselines read its sentence-encoder vectors, computed on first use
and shared, so a set of texts goes through the sentence encoder once whatever the number of baselines. That
encoder is the runs' pretrained one (the first run's untrained embedder's): a run that fine-tuned its encoder is
compared with baselines on the encoder it started from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from store.layout import DataRoot
from training.baselines import Baseline, SentenceEncoder, fit_baselines
from training.config import TrainConfig
from training.data import Splits
from training.metrics import retrieval_metrics
from training.model import EmbedderConfig, TextEmbedder, load_text_embedder
from training.plots import plot_confusion
from training.trainer import checkpoint_model_dir, validation_set
from training.zero_shot import prompt_texts, zero_shot_tags


class TextSet:
    """Texts to embed, with their sentence-encoder vectors computed on first use and then shared."""

    def __init__(self, texts: Sequence[str], sentences: SentenceEncoder) -> None:
        self.texts = list(texts)
        self._sentences = sentences

    @cached_property
    def sentence_vectors(self) -> np.ndarray:
        return self._sentences.encode(self.texts)


Embed = Callable[[TextSet], np.ndarray]


@dataclass(frozen=True)
class Contenders:
    embeds: dict[str, Embed]
    """Report row name → how that contender embeds texts, in report order."""
    trained: dict[str, TextEmbedder]
    """Run id → its best checkpoint."""
    names: dict[str, str]
    """Run id → its report row name."""
    sentences: SentenceEncoder

    def retrieval(self, texts: Sequence[str], audio: np.ndarray,
                  owners: np.ndarray | None = None) -> dict[str, dict[str, float]]:
        """:func:`training.metrics.retrieval_metrics` of every contender, by row name."""
        shared = TextSet(texts, self.sentences)
        return {name: retrieval_metrics(embed(shared), audio, owners=owners) for name, embed in self.embeds.items()}

    def families(self, audio: np.ndarray, item_tags: Sequence[Collection[str]],
                 families: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
        """Zero-shot classification within each single-label family by every contender: family → its ``tags``,
        ``items`` (those with exactly one of them), ``excluded``, and ``methods``: row name → ``accuracy`` and
        ``confusion`` (``[true][predicted]`` in ``tags`` order)."""
        if not families:
            return {}
        tags = sorted({tag for members in families.values() for tag in members})
        prompts = TextSet(prompt_texts(tags), self.sentences)
        compared: dict[str, dict[str, Any]] = {}
        for name, embed in self.embeds.items():
            for family in zero_shot_tags(audio, item_tags, embed(prompts), tags, families).families:
                entry = compared.setdefault(family.family, {"tags": family.tags, "items": family.items,
                                                            "excluded": family.excluded, "methods": {}})
                entry["methods"][name] = {"accuracy": family.accuracy, "confusion": family.confusion}
        return compared


def build_contenders(root: DataRoot, configs: Mapping[str, TrainConfig], splits: Splits,
                     device: str) -> Contenders:
    """Load each run's best checkpoint, make its untrained twin, and fit the baselines on ``splits.train``
    (their ridge penalty chosen on ``splits.val`` as the trainer validates: one pair per group)."""
    embeds: dict[str, Embed] = {}
    trained: dict[str, TextEmbedder] = {}
    names: dict[str, str] = {}
    untrained: list[TextEmbedder] = []
    for run_id, config in configs.items():
        trained[run_id] = load_text_embedder(checkpoint_model_dir(root.run_dir(run_id)), device=device)
        names[run_id] = f"{run_id} ({config.head})"
        embeds[names[run_id]] = _embedded(trained[run_id])
        untrained.append(TextEmbedder(EmbedderConfig(audio_dim=splits.audio_dim, head=config.head,
                                                     encoder=config.encoder, max_length=config.max_length,
                                                     seed=config.seed, audio_model=config.model)).to(device))
        embeds[f"untrained {config.head} (baseline)"] = _embedded(untrained[-1])
    first = next(iter(configs.values()))
    sentences = SentenceEncoder(untrained[0])
    val = validation_set(splits.val, limit=first.val_limit, seed=first.seed)
    for name, baseline in fit_baselines(splits.train, sentences, val.texts, val.audio).items():
        embeds[name] = _projected(baseline)
    return Contenders(embeds, trained, names, sentences)


def confusion_figures(out_dir: Path, families: Mapping[str, Mapping[str, Any]]) -> dict[str, Path]:
    """One confusion-matrix PNG per family and contender (of :meth:`Contenders.families`), for the families some
    item can be scored on; named ``confusion <family>: <row name>``."""
    figures = {}
    for family, entry in families.items():
        if not entry["items"]:
            continue
        for method, scored in entry["methods"].items():
            path = out_dir / f"confusion-{_slug(family)}-{_slug(method)}.png"
            figures[f"confusion {family}: {method}"] = plot_confusion(scored["confusion"], entry["tags"], path,
                                                                      f"zero-shot {family}, {method}")
    return figures


def _embedded(model: TextEmbedder) -> Embed:
    return lambda texts: model.encode(texts.texts)


def _projected(baseline: Baseline) -> Embed:
    return lambda texts: baseline.project(texts.sentence_vectors)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
