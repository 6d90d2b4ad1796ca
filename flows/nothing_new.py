"""Whether a pipeline run has anything to do, asked before any flow starts.

A run with nothing new should cost what nothing costs, not the corpus's size or Prefect's start-up: so the CLI
asks each chosen stage whether it is settled (:mod:`flows.settling`) and looks for new catalog rows itself,
without writing anything. When every stage is settled it prints their counts and starts no flow; otherwise the
flows run as always, and each of them skips a stage that turns out settled.

No Prefect here. The catalog is the one stage that must look at the source on every run (a schedule ingests
what it has added): the source lists its rows here, and a listing other than the one last merged into the manifest,
or any error, means "run the flows", which catalog for real and report what they found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from downloaders import get_source
from downloaders.base import SourceContext
from embedders import embedder_spec
from flows import settling
from flows.summary import StageSummary
from store.layout import DataRoot
from store.manifest import canonical_row
from store.settings import Settings, load_settings


def catalog_unchanged(root: DataRoot, settings: Settings, dataset: str, options: dict[str, Any],
                      limit: int | None) -> StageSummary | None:
    """The catalog's summary when the source lists the same rows as when the manifest was last merged
    (:func:`flows.settling.catalog_settling`); else ``None``, and ``None`` when the source cannot be read now
    (the flow meets the error again and reports it properly)."""
    source = get_source(dataset)
    try:
        source.check_options(options)
        listed = [canonical_row(row) for row in source.catalog(SourceContext(root, settings, options, limit))]
    except Exception:
        return None
    return settling.catalog_settling(root, dataset, listed).settled()


def settled_run(datasets: Sequence[str], options: dict[str, dict[str, Any]], limit: int | None,
                models: Sequence[str], stages: Sequence[str], root: str | None, *,
                whole_tracks: bool = False) -> list[StageSummary] | None:
    """The summaries of a pipeline run over ``stages`` that would work nothing, or ``None`` as soon as one stage
    has something to do (or training is asked for: a training run is never a no-op)."""
    if "train" in stages:
        return None
    settings = load_settings(root=root, clip_s=0.0 if whole_tracks else None)
    data_root = DataRoot(settings.root)
    checks: list[Callable[[], StageSummary | None]] = []
    for dataset in datasets:
        if "ingest" in stages:
            checks += [lambda d=dataset: catalog_unchanged(data_root, settings, d, options.get(d, {}), limit),
                       settling.acquire_settling(data_root, dataset, options.get(dataset, {})).settled]
        if "preprocess" in stages:
            checks.append(settling.preprocess_settling(data_root, dataset).settled)
        if "embed" in stages:
            checks += [settling.embed_settling(data_root, dataset, model, embedder_spec(model).space).settled
                       for model in models]
        if "verify" in stages:
            checks.append(settling.verify_settling(data_root, dataset, list(models), settings).settled)
    summaries = []
    for check in checks:
        summary = check()
        if summary is None:
            return None
        summaries.append(summary)
    return summaries


def unless_settled(stage: settling.Settling, force: bool, run: Callable[[], StageSummary]) -> StageSummary:
    """``run()``, unless the stage is settled (and not forced): then its counts, without starting its flow."""
    found = None if force else stage.settled()
    return found if found is not None else run()
