"""Evaluation of trained text embedders on the held-out (test) split, beside what no training gives.

Runs compared together must share the audio model, datasets, split fractions and seed, so that they
are scored on the same test pairs; each is scored with its best checkpoint, with an untrained embedder of
the same head and encoder (a fresh head, the run's seed), which is what training bought, and with the two
seed baselines (prototype and linear, :mod:`training.contenders`) fitted on the same training split.
Test pairs are one per group (clips of one recording often share one text, which would make ranks
arbitrary), the item's first text against its audio vector; the number of candidates is stated. A run whose
record of training groups includes a test group (a dataset catalogued after training holds it out now) is
refused: it would be scored on what it learnt from.

The best run (validation-chosen checkpoint, ranked here by text→music Recall@10) also gets the
pictures: the cosine-similarity distribution of matching and non-matching pairs, a 2-D map of its text
and audio vectors coloured by the items' first tag, recall against K, and zero-shot tag
classification from prompts ("a {tag} track"): per-tag ROC-AUC and PR-AUC. Every contender gets a confusion
matrix for each single-label tag family a source declares (``Source.tag_families``). The sources live above
this layer, so the caller passes their families in (``tag_families``, dataset → family → tags).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.errors import InvalidInputError
from store.layout import DataRoot
from training.config import TrainConfig, run_config
from training.contenders import Contenders, build_contenders, confusion_figures
from training.data import Splits, load_splits
from training.leak import refuse_trained_groups
from training.model import TextEmbedder
from training.plots import plot_embedding_map, plot_recall_curve, plot_similarity_distribution, recall_curve
from training.report import Results, write_evaluation_report
from training.trainer import Validation, validation_set
from training.zero_shot import prompt_texts, zero_shot_tags

ZERO_SHOT_TAGS = 40
"""Most frequent test tags scored one by one (families are scored whole)."""
SHARED_FIELDS = ("model", "space", "datasets", "fractions", "seed")
TagFamilies = Mapping[str, Mapping[str, Sequence[str]]]
"""Dataset → its single-label tag families (family → tags)."""


@dataclass(frozen=True)
class Evaluation:
    json_path: Path
    markdown_path: Path
    results: dict[str, dict[str, float]]
    best_run: str
    subsets: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Named parts of the evaluation set (a benchmark's validated captions), scored the same way."""


def run_configs(root: DataRoot, run_ids: Sequence[str]) -> dict[str, TrainConfig]:
    """The runs' configurations, checked to share what decides their splits: runs evaluated together are scored
    on the same items, beside baselines fitted on the same training split."""
    configs = {run_id: run_config(root, run_id) for run_id in run_ids}
    first = next(iter(configs.values()))
    for run_id, config in configs.items():
        differing = [f for f in SHARED_FIELDS if getattr(config, f) != getattr(first, f)]
        if differing:
            raise InvalidInputError(f"run {run_id} differs from {run_ids[0]} in {', '.join(differing)}; runs evaluated "
                                    "together must share their test split")
    return configs


def families_of(datasets: Sequence[str], tag_families: TagFamilies) -> dict[str, Sequence[str]]:
    """The single-label families of ``datasets``, merged (family → tags)."""
    return {name: tags for dataset in datasets for name, tags in tag_families.get(dataset, {}).items()}


def best_run(configs: Mapping[str, TrainConfig], contenders: Contenders, results: Results) -> str:
    """The run with the highest text→music Recall@10 in ``results``."""
    return max(configs, key=lambda run_id: results[contenders.names[run_id]]["t2m_R@10"])


def evaluate_runs(root: DataRoot, run_ids: Sequence[str], *, tag_families: TagFamilies, name: str | None = None,
                  device: str = "cpu") -> Evaluation:
    """Score ``run_ids``, their untrained twins and the baselines on the test split; write the report with its
    plots under ``reports/evaluation/<name>/`` (``name`` defaults to the run ids joined). ``tag_families`` maps a
    dataset to its single-label tag families (``Source.tag_families``); a dataset it lacks has none."""
    out_dir = root.evaluation_dir(name or "+".join(run_ids))  # a name that cannot be a folder fails first
    configs = run_configs(root, run_ids)
    first = next(iter(configs.values()))
    splits = load_splits(root, first.datasets, first.model, first.space, fractions=first.fractions, seed=first.seed)
    if len({item.group for item in splits.test}) < 2:
        raise InvalidInputError(f"the test split of {', '.join(first.datasets)} has fewer than two groups; evaluation "
                                "needs more (grow the corpus)")
    refuse_trained_groups(root, run_ids, {item.group for item in splits.test}, "the test split",
                          "A dataset catalogued after the run was trained holds them out now; train a new run "
                          "(another --run-id), which keeps them out of its train split.", require_record=False)
    pairs = validation_set(splits.test)
    contenders = build_contenders(root, configs, splits, device)
    results = contenders.retrieval(pairs.texts, pairs.audio)
    best = best_run(configs, contenders, results)
    families = contenders.families(pairs.audio, [set(item.tags) for item in pairs.items],
                                   families_of(first.datasets, tag_families))
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _pictures(out_dir, contenders.trained[best], pairs) | confusion_figures(out_dir, families)
    meta = {"runs": list(run_ids), "best_run": best, "model": first.model, "space": first.space,
            "datasets": list(first.datasets), "test_pairs": len(pairs.items),
            "split_sizes": {n: len(splits[n]) for n in ("train", "val", "test")},
            "baselines": baselines_fitted(splits, first)}
    json_path, markdown_path = write_evaluation_report(
        out_dir, title=f"Text → {first.model} retrieval on {', '.join(first.datasets)}", results=results,
        zero_shot=_zero_shot(contenders.trained[best], pairs, families), plots=plots, meta=meta, families=families)
    return Evaluation(json_path, markdown_path, results, best)


def baselines_fitted(splits: Splits, config: TrainConfig) -> str:
    """What the baseline rows were fitted on, for the report."""
    return (f"prototype and linear, fitted on the {len(splits.train)} items of the train split with "
            f"{config.encoder}'s pooled sentence vectors")


def _pictures(out_dir: Path, embedder: TextEmbedder, pairs: Validation) -> dict[str, Path]:
    text, audio = embedder.encode(pairs.texts), pairs.audio
    labels = [item.tags[0] if item.tags else "untagged" for item in pairs.items]
    return {
        "similarity": plot_similarity_distribution(text, audio, out_dir / "similarity.png"),
        "map": plot_embedding_map(text, audio, labels, out_dir / "map.png"),
        "recall": plot_recall_curve(recall_curve(text, audio), out_dir / "recall.png"),
    }


def _zero_shot(embedder: TextEmbedder, pairs: Validation, families: Mapping[str, Mapping[str, Any]]) -> dict | None:
    """Per-tag ROC-AUC and PR-AUC of the best run, for the most frequent test tags and the families' tags."""
    counts = Counter(tag for item in pairs.items for tag in item.tags)
    tags = sorted({tag for tag, _ in counts.most_common(ZERO_SHOT_TAGS)}
                  | {tag for entry in families.values() for tag in entry["tags"]})
    if not tags:
        return None
    return zero_shot_tags(pairs.audio, [set(item.tags) for item in pairs.items],
                          embedder.encode(prompt_texts(tags)), tags).to_dict()
