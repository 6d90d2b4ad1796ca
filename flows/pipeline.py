"""The pipeline flow: ingest → preprocess → embed → verify for each dataset, then training, each incremental.

Embedding and training go to the ``gpu`` work pool when the server has their deployments, and run
in this process otherwise (:mod:`flows.handoff`); the other stages run here, as subflows. With Dask,
one cluster serves every stage of the run (:mod:`flows.scale_out`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from embedders import embedder_spec
from flows.handoff import EMBED_DEPLOYMENT, TRAIN_DEPLOYMENT, deployed, run_on_pool
from flows.nothing_new import unless_settled
from flows.progress import artifact_key
from flows.scale_out import dask_cluster
from flows.settling import embed_settling, preprocess_settling, verify_settling
from flows.stage_names import check_stages
from flows.stages import RUNNER, StageSummary, embed, ingest, preprocess, verify
from store.layout import DataRoot
from store.settings import load_settings


def run_name(datasets: list[str] | None, models: list[str] | None) -> str:
    """``pipeline-<datasets>-<models>``, e.g. ``pipeline-synthetic-dsp``, so runs read apart in the UI."""
    return "-".join(["pipeline", *(datasets or ["synthetic"]), *(models or ["dsp"])])


def _run_name() -> str:
    return run_name(flow_run.parameters.get("datasets"), flow_run.parameters.get("models"))


@flow(name="pipeline", flow_run_name=_run_name, task_runner=RUNNER)
def pipeline(datasets: list[str] | None = None, options: dict[str, dict[str, Any]] | None = None,
             limit: int | None = None, models: list[str] | None = None, force: bool = False,
             root: str | None = None, stages: list[str] | None = None, train_options: dict[str, Any] | None = None,
             dask: bool = False, dask_address: str | None = None, hand_off: bool = True,
             whole_tracks: bool = False) -> list[StageSummary]:
    """Run ``stages`` (default ingest, preprocess, embed, verify; add ``train``) of ``datasets`` with ``models``.

    ``options``: source options per dataset. ``train_options``: training settings (epochs, max_steps,
    freeze_encoder, lr, device, …) for one run per model over all ``datasets``. ``dask``/``dask_address``:
    run work units on a Dask cluster (a LocalCluster for this run, or the scheduler at that address).
    ``hand_off``: give embedding and training to the ``gpu`` pool when their deployments exist.
    ``whole_tracks``: catalogue one item per whole file (as Navidrome embeds tracks) instead of windows.
    """
    datasets = datasets or ["synthetic"]
    models = models or ["dsp"]
    chosen = check_stages(stages)
    embed_on_pool = hand_off and "embed" in chosen and deployed(EMBED_DEPLOYMENT)
    summaries: list[StageSummary] = []
    settings = load_settings(root=root)
    data_root = DataRoot(settings.root)
    with dask_cluster(dask, dask_address, settings.workers) as address:
        units = {"dask_address": address}
        for dataset in datasets:
            if "ingest" in chosen:
                summaries += ingest(dataset, (options or {}).get(dataset, {}), limit, force, root, **units,
                                    whole_tracks=whole_tracks)
            if "preprocess" in chosen:
                summaries.append(unless_settled(preprocess_settling(data_root, dataset), force,
                                                lambda d=dataset: preprocess(d, force, root, **units)))
            if "embed" in chosen:
                for model in models:
                    parameters = {"dataset": dataset, "model": model, "force": force, "root": root}
                    summaries.append(unless_settled(
                        embed_settling(data_root, dataset, model, embedder_spec(model).space), force,
                        lambda p=parameters, m=model, d=dataset:
                        run_on_pool(EMBED_DEPLOYMENT, p | {"dask_address": dask_address}, f"embed-{d}-{m}")
                        if embed_on_pool else embed(**p, **units)))
            if "verify" in chosen:
                summaries.append(unless_settled(verify_settling(data_root, dataset, models, settings), False,
                                                lambda d=dataset: verify(d, models, root, **units)))
    if "train" in chosen:
        summaries += [_train(model, datasets, root, train_options or {}, hand_off) for model in models]
    create_table_artifact([s.row() for s in summaries], key=artifact_key(run_name(datasets, models), "summary"),
                          description=f"what each stage of {', '.join(datasets)} did")
    return summaries


def _train(model: str, datasets: list[str], root: str | None, options: dict[str, Any],
           hand_off: bool) -> StageSummary:
    """Train text embedders into ``model``'s space (both heads) and sum the runs up as one row."""
    from flows import learning  # torch and transformers load only for a pipeline that trains

    parameters = {"model": model, "datasets": datasets, "root": root, "options": options}
    runs: list[learning.RunSummary] = (
        run_on_pool(TRAIN_DEPLOYMENT, parameters, f"train-{model}-{'-'.join(datasets)}")
        if hand_off and deployed(TRAIN_DEPLOYMENT) else learning.train(**parameters))
    notes = "; ".join(f"{r.config.run_id}: val text→music R@10 {r.result.best_metrics.get('t2m_R@10', 0):.3f} "
                      f"at step {r.result.best_step}" for r in runs)
    pairs = runs[0].result.split_sizes.get("train", 0) if runs else 0
    return StageSummary("+".join(datasets), f"train:{model}", pairs, 0, len(runs), len(runs), 0, 0, {}, notes)
