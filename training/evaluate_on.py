"""Evaluation on a benchmark dataset in the production condition: every caption of a catalogued dataset ranks
all of its items' stored vectors, as a Navidrome text query ranks a library's track vectors.

The Song Describer Dataset is the target: one whole track per item and all of its captions, so text→music ranks
the tracks for each caption and music→text ranks all captions for each track (a track is found at its
best-ranked caption). Both are reported on every caption and on the validated captions
(:mod:`training.benchmark`), beside each run's untrained twin and the baselines fitted on the runs' own training
split (:mod:`training.contenders`). The report names the model and space of the vectors and the candidate counts.

A run that learnt from any of the benchmark's recordings, or that cannot show it did not (no record of its
training groups), is refused before anything is loaded (:mod:`training.leak`).
"""

from __future__ import annotations

from collections.abc import Sequence

from store.errors import InvalidInputError
from store.layout import DataRoot
from training.benchmark import benchmark_groups, load_benchmark
from training.config import TrainConfig
from training.contenders import build_contenders, confusion_figures
from training.data import load_splits
from training.evaluate import (
    Evaluation,
    TagFamilies,
    baselines_fitted,
    best_run,
    families_of,
    run_configs,
)
from training.leak import refuse_trained_groups
from training.report import write_evaluation_report


def check_benchmark(root: DataRoot, run_ids: Sequence[str], dataset: str) -> None:
    """Refuse runs that ``dataset`` cannot score fairly, from the manifest and run records alone (the CLI asks
    this before it starts the flow)."""
    run_configs(root, run_ids)
    _refuse_leaks(root, run_ids, dataset, benchmark_groups(root, dataset))


def evaluate_on(root: DataRoot, run_ids: Sequence[str], dataset: str, *, tag_families: TagFamilies,
                name: str | None = None, device: str = "cpu") -> Evaluation:
    """Score ``run_ids``, their untrained twins and the baselines on every item of ``dataset``; write the report
    under ``reports/evaluation/<name>/`` (``name`` defaults to ``dataset``)."""
    out_dir = root.evaluation_dir(name or dataset)
    configs = run_configs(root, run_ids)
    first = next(iter(configs.values()))
    benchmark = load_benchmark(root, dataset, first.model, first.space)
    _refuse_leaks(root, run_ids, dataset, benchmark.groups)
    splits = load_splits(root, first.datasets, first.model, first.space, fractions=first.fractions, seed=first.seed)
    _check_dim(splits.audio_dim, benchmark.items.audio.shape[1], first, dataset)
    contenders = build_contenders(root, configs, splits, device)
    items = benchmark.items
    results = contenders.retrieval(items.captions, items.audio, items.owners)
    subsets = {label: contenders.retrieval(part.captions, part.audio, part.owners)
               for label, part in benchmark.subsets.items()}
    families = contenders.families(items.audio, items.item_tags, families_of([dataset], tag_families))
    out_dir.mkdir(parents=True, exist_ok=True)
    best = best_run(configs, contenders, results)
    counts = "; ".join(f"{label}: {len(part.item_ids)} items ranked for each caption, {len(part.captions)} "
                       "captions for each item" for label, part in {"all captions": items, **benchmark.subsets}.items())
    meta = {"runs": list(run_ids), "best_run": best, "dataset": dataset,
            "vectors": f"{first.model} vectors of space {first.space}, one per item of {dataset}",
            "candidates": counts, "skipped": benchmark.skipped, "trained_on": list(first.datasets),
            "baselines": baselines_fitted(splits, first)}
    json_path, markdown_path = write_evaluation_report(
        out_dir, title=f"Text → {first.model} retrieval on {dataset}, every item a candidate", results=results,
        zero_shot=None, plots=confusion_figures(out_dir, families), meta=meta, subsets=subsets, families=families)
    return Evaluation(json_path, markdown_path, results, best, subsets)


def _refuse_leaks(root: DataRoot, run_ids: Sequence[str], dataset: str, groups: set[str]) -> None:
    refuse_trained_groups(
        root, run_ids, groups, dataset,
        f"Catalogue {dataset} before training (`musictext ingest {dataset}`): training keeps every group that a "
        "catalogued dataset holds out (its test rows) out of its train split. Then train a new run (another "
        "--run-id).", require_record=True)


def _check_dim(trained: int, benchmark: int, config: TrainConfig, dataset: str) -> None:
    if trained != benchmark:
        raise InvalidInputError(f"the {config.model} vectors of {dataset} have {benchmark} dimensions, those the runs "
                                f"learnt {trained}; embed {dataset} again with the same model revision")
