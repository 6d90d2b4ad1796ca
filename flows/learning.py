"""The training and evaluation flows: text embedders for one audio embedder's shards, and their report.

``train`` trains one run per head (``frames``, ``pooled`` or both), stage 1 and, when asked, stage 2
started from stage 1's best checkpoint, as one flow; each run resumes from its last checkpoint when it
exists, and a finished run is found, not retrained. ``evaluate`` scores runs against their untrained
twins and the seed baselines on the test split, or on every item of a benchmark dataset, and writes the
report. Both publish what the UI needs: a progress artifact while training, the loss and validation-metric
curve as a table, the report as Markdown; the training artifacts say where each step's curves are (TensorBoard
by default, :mod:`training.tracking`) and how to open them.

A run with ``devices`` > 1 (an option, as ``--devices`` gives it) is trained by that many processes that
:mod:`training.launch` starts and the flow waits for; its progress artifact then moves only when the run ends.
Under a launcher (``torchrun``, ``accelerate launch``) every process is already one of them, and
:func:`train_here` trains without a flow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from downloaders import get_source, source_names
from flows.progress import artifact_key
from flows.settling import evaluation_settling
from store.errors import InvalidInputError
from store.layout import DataRoot
from store.settings import load_settings
from training.config import TrainConfig, run_config
from training.distributed import is_main_process, launched_processes
from training.evaluate import evaluate_runs
from training.evaluate_on import evaluate_on
from training.launch import train_in_processes
from training.run_plans import RunSummary, train_configs
from training.tracking import locations
from training.trainer import StepReport, TrainResult
from training.trainer import train as train_run


def _train_run_name() -> str:
    """``train-<run id>``, the run id defaulting to ``<model>-<datasets>`` as in :func:`train`."""
    parameters = flow_run.parameters
    datasets = "-".join(parameters.get("datasets") or ["synthetic"])
    return f"train-{parameters.get('run_id') or parameters.get('model', 'dsp') + '-' + datasets}"


@flow(name="train", flow_run_name=_train_run_name, persist_result=True)
def train(model: str = "dsp", datasets: list[str] | None = None, run_id: str | None = None,
          heads: list[str] | None = None, stage2_mse_weight: float = 0.0, root: str | None = None,
          options: dict[str, Any] | None = None) -> list[RunSummary]:
    """Train text embedders into ``model``'s space on ``datasets``, one run per head in ``heads``.

    ``options`` are further :class:`training.config.TrainConfig` fields (epochs, batch_size, lr,
    freeze_encoder, device, …); ``devices`` (``{"devices": 4}``) trains each run data-parallel on that many GPUs;
    ``trackers`` takes what ``--tracker`` does (``["wandb"]`` adds W&B to TensorBoard, ``["none"]`` turns
    tracking off). ``stage2_mse_weight > 0`` continues each run with stage 2
    (InfoNCE plus that weight × squared distance to the audio vector).
    """
    data_root = DataRoot(load_settings(root=root).root)
    configs = train_configs(model, datasets, run_id, heads, stage2_mse_weight, options)
    return [_train_one(config, data_root) for config in configs]


def train_here(model: str = "dsp", datasets: list[str] | None = None, run_id: str | None = None,
               heads: list[str] | None = None, stage2_mse_weight: float = 0.0, root: str | None = None,
               options: dict[str, Any] | None = None) -> list[RunSummary]:
    """What :func:`train` trains, in this process as one of those a launcher started (``torchrun``, ``accelerate
    launch``); every process calls it and they train each run together. ``devices`` is the launcher's number of
    processes: an option that says another is refused."""
    world = launched_processes()
    options = dict(options or {})
    if options.setdefault("devices", world) != world:
        raise InvalidInputError(f"--devices {options['devices']} under a launcher that started {world} processes; "
                                "leave --devices out, the launcher decides")
    configs = train_configs(model, datasets, run_id, heads, stage2_mse_weight, options)
    data_root = DataRoot(load_settings(root=root).root)
    return [RunSummary(config, train_run(config, data_root, show_progress=is_main_process())) for config in configs]


def _train_one(config: TrainConfig, root: DataRoot) -> RunSummary:
    logger = get_run_logger()
    logger.info("training %s (%s head, stage %d) into %s", config.run_id, config.head, config.stage, config.model)
    in_flow = FlowRunContext.get() is not None
    curves = locations(root.runs_dir() / config.run_id, config.trackers)
    for line in curves:
        logger.info("%s: %s", config.run_id, line)
    where = "".join(f"\n\n{line}" for line in curves)
    progress = create_progress_artifact(0.0, key=artifact_key("train", config.run_id, "progress"),
                                        description=f"training {config.run_id}{where}") if in_flow else None

    def report(step: StepReport) -> None:
        if progress is not None and (step.step % 10 == 0 or step.step == step.max_steps):
            update_progress_artifact(progress, progress=100.0 * step.step / max(step.max_steps, 1))
        if step.metrics:
            logger.info("%s step %d/%d: loss %.4f, validation text→music R@10 %.3f", config.run_id, step.step,
                        step.max_steps, step.loss, step.metrics.get("t2m_R@10", float("nan")))

    result: TrainResult = (train_run(config, root, on_progress=report) if config.devices == 1
                           else train_in_processes(config, root))
    if progress is not None:
        update_progress_artifact(progress, progress=100.0)
    if in_flow:
        create_table_artifact(_curve(result), key=artifact_key("train", config.run_id, "curve"),
                              description=f"loss and validation metrics of {config.run_id} at each evaluation{where}")
    logger.info("%s: best validation text→music R@10 %.3f at step %d of %d%s", config.run_id,
                result.best_metrics.get("t2m_R@10", float("nan")), result.best_step, result.step,
                " (stopped early)" if result.stopped_early else "")
    return RunSummary(config, result)


def _curve(result: TrainResult) -> list[dict[str, Any]]:
    """One row per evaluation from ``metrics.jsonl``: step, training losses, validation recall and MRR."""
    rows = []
    for line in (result.run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        validation = entry.get("val", {})
        losses = {k: round(v, 5) for k, v in entry.items() if k not in ("step", "epoch", "val")}
        rows.append({"step": entry["step"], **losses,
                     **{k: round(validation[k], 4) for k in ("t2m_R@1", "t2m_R@10", "t2m_MRR", "m2t_R@10")
                        if k in validation}})
    return rows


def tag_families(datasets: Iterable[Sequence[str]]) -> dict[str, Mapping[str, tuple[str, ...]]]:
    """Dataset → the single-label tag families its source declares, for the datasets that are sources (a
    test corpus's made-up datasets are not); what evaluation scores as zero-shot classification."""
    names = set(source_names())
    return {dataset: get_source(dataset).tag_families for group in datasets for dataset in group if dataset in names}


@flow(name="evaluate", flow_run_name="evaluate-{name}")
def evaluate(runs: list[str], name: str = "latest", root: str | None = None, device: str = "cpu",
             on: str | None = None) -> dict[str, Any]:
    """Score ``runs``, their untrained twins and the seed baselines on the test split, or with ``on`` on every
    item of that catalogued benchmark dataset; the report goes to ``reports/evaluation/<name>/`` and to the UI as
    a Markdown artifact."""
    data_root = DataRoot(load_settings(root=root).root)
    settling = evaluation_settling(data_root, name, runs, [run_config(data_root, run) for run in runs], device, on)
    before = settling.before()
    families = tag_families([*(run_config(data_root, run).datasets for run in runs), *([[on]] if on else [])])
    evaluation = (evaluate_on(data_root, runs, on, name=name, device=device, tag_families=families) if on
                  else evaluate_runs(data_root, runs, name=name, device=device, tag_families=families))
    if FlowRunContext.get() is not None:
        create_markdown_artifact(evaluation.markdown_path.read_text(), key=artifact_key("evaluation", name),
                                 description=f"evaluation of {', '.join(runs)}" + (f" on {on}" if on else ""))
    get_run_logger().info("evaluation report: %s", evaluation.markdown_path)
    found = {"report": str(evaluation.markdown_path), "json": str(evaluation.json_path),
             "best_run": evaluation.best_run, "results": evaluation.results, "subsets": evaluation.subsets}
    settling.keep(before, found)
    return found
