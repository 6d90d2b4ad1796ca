"""Evaluation of trained text embedders on the held-out (test) split, beside what no training gives.

Runs compared together must share the audio model, datasets, split fractions and seed, so that they
are scored on the same test pairs; each is scored with its best checkpoint and with an untrained
embedder of the same head and encoder (a fresh head, the run's seed), which is what training bought.
Test pairs are one per group (clips of one recording often share one text, which would make ranks
arbitrary), the item's first text against its audio vector; the number of candidates is stated.

The best run (validation-chosen checkpoint, ranked here by text→music Recall@10) also gets the
pictures: the cosine-similarity distribution of matching and non-matching pairs, a 2-D map of its text
and audio vectors coloured by the items' first tag, recall against K, and zero-shot tag
classification from prompts ("a {tag} track"): per-tag ROC-AUC and PR-AUC, and a confusion matrix for
each single-label tag family a source declares (``Source.tag_families``). The sources live above this
layer, so the caller passes their families in (``tag_families``, dataset → family → tags).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from store.errors import InvalidInputError, MissingInputError
from store.layout import DataRoot
from training.config import TrainConfig
from training.data import Item, load_splits
from training.metrics import retrieval_metrics
from training.model import EmbedderConfig, TextEmbedder, load_text_embedder
from training.plots import (
    plot_confusion,
    plot_embedding_map,
    plot_recall_curve,
    plot_similarity_distribution,
    recall_curve,
)
from training.report import write_evaluation_report
from training.trainer import checkpoint_model_dir, validation_set
from training.zero_shot import prompt_texts, zero_shot_tags

ZERO_SHOT_TAGS = 40
"""Most frequent test tags scored one by one (families are scored whole)."""
SHARED_FIELDS = ("model", "space", "datasets", "fractions", "seed")


@dataclass(frozen=True)
class Evaluation:
    json_path: Path
    markdown_path: Path
    results: dict[str, dict[str, float]]
    best_run: str


def run_config(root: DataRoot, run_id: str) -> TrainConfig:
    path = root.run_dir(run_id) / "config.json"
    if not path.is_file():
        raise MissingInputError(f"no training run {run_id!r} under {root.runs_dir()}; `musictext train` makes one")
    return TrainConfig.from_json(json.loads(path.read_text()))


def evaluate_runs(root: DataRoot, run_ids: Sequence[str], *, tag_families: Mapping[str, Mapping[str, Sequence[str]]],
                  name: str | None = None, device: str = "cpu") -> Evaluation:
    """Score ``run_ids`` and their untrained baselines on the test split; write the report with its plots under
    ``reports/evaluation/<name>/`` (``name`` defaults to the run ids joined). ``tag_families`` maps a dataset
    to its single-label tag families (``Source.tag_families``); a dataset it lacks has none."""
    out_dir = root.evaluation_dir(name or "+".join(run_ids))  # a name that cannot be a folder fails first
    configs = {run_id: run_config(root, run_id) for run_id in run_ids}
    first = next(iter(configs.values()))
    for run_id, config in configs.items():
        differing = [f for f in SHARED_FIELDS if getattr(config, f) != getattr(first, f)]
        if differing:
            raise InvalidInputError(f"run {run_id} differs from {run_ids[0]} in {', '.join(differing)}; runs evaluated "
                                    "together must share their test split")
    splits = load_splits(root, first.datasets, first.model, first.space, fractions=first.fractions, seed=first.seed)
    if len({item.group for item in splits.test}) < 2:
        raise InvalidInputError(f"the test split of {', '.join(first.datasets)} has fewer than two groups; evaluation "
                                "needs more (grow the corpus)")
    pairs = validation_set(splits.test)
    test, texts, audio = pairs.items, pairs.texts, pairs.audio
    results: dict[str, dict[str, float]] = {}
    trained: dict[str, TextEmbedder] = {}
    for run_id, config in configs.items():
        trained[run_id] = load_text_embedder(checkpoint_model_dir(root.run_dir(run_id)), device=device)
        results[f"{run_id} ({config.head})"] = retrieval_metrics(trained[run_id].encode(texts), audio)
        untrained = TextEmbedder(EmbedderConfig(audio_dim=splits.audio_dim, head=config.head, encoder=config.encoder,
                                                max_length=config.max_length, seed=config.seed,
                                                audio_model=config.model)).to(device)
        results[f"untrained {config.head} (baseline)"] = retrieval_metrics(untrained.encode(texts), audio)
    best = max(configs, key=lambda run_id: results[f"{run_id} ({configs[run_id].head})"]["t2m_R@10"])
    out_dir.mkdir(parents=True, exist_ok=True)
    plots, zero_shot = _pictures(out_dir, trained[best], texts, audio, test, first.datasets, tag_families)
    meta = {"runs": list(run_ids), "best_run": best, "model": first.model, "datasets": list(first.datasets),
            "test_pairs": len(test), "split_sizes": {n: len(splits[n]) for n in ("train", "val", "test")}}
    json_path, markdown_path = write_evaluation_report(
        out_dir, title=f"Text → {first.model} retrieval on {', '.join(first.datasets)}", results=results,
        zero_shot=zero_shot, plots=plots, meta=meta)
    return Evaluation(json_path, markdown_path, results, best)


def _pictures(out_dir: Path, embedder: TextEmbedder, texts: list[str], audio: np.ndarray, test: list[Item],
              datasets: Sequence[str], tag_families: Mapping[str, Mapping[str, Sequence[str]]]
              ) -> tuple[dict[str, Path], dict | None]:
    text = embedder.encode(texts)
    labels = [item.tags[0] if item.tags else "untagged" for item in test]
    plots = {
        "similarity": plot_similarity_distribution(text, audio, out_dir / "similarity.png"),
        "map": plot_embedding_map(text, audio, labels, out_dir / "map.png"),
        "recall": plot_recall_curve(recall_curve(text, audio), out_dir / "recall.png"),
    }
    families = {name: tags for dataset in datasets for name, tags in tag_families.get(dataset, {}).items()}
    counts = Counter(tag for item in test for tag in item.tags)
    tags = sorted({tag for tag, _ in counts.most_common(ZERO_SHOT_TAGS)} | {t for f in families.values() for t in f})
    if not tags:
        return plots, None
    result = zero_shot_tags(audio, [set(item.tags) for item in test], embedder.encode(prompt_texts(tags)), tags,
                            families)
    for family in result.families:
        if family.items:
            plots[f"confusion {family.family}"] = plot_confusion(
                family.confusion, family.tags, out_dir / f"confusion-{family.family}.png",
                f"zero-shot {family.family}")
    return plots, result.to_dict()
