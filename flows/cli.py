"""The ``musictext`` command line: run one stage of one dataset, or the whole pipeline, and look at status.

Prefect, the sources, the embedders and the data formats are imported inside the commands that use them, not
here: ``musictext --help`` (and a mistyped option) should answer at once, not after a second of imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from flows.command_line import EXIT_PROBLEMS, RootOption, data_root_of, fail, root_arg
from flows.corpus_cli import export_corpus
from flows.export_cli import export_run
from flows.index_cli import index_app
from flows.progress import console as errors
from flows.serve_cli import serve
from flows.stage_names import DEFAULT_STAGES, STAGES, check_stages
from store.errors import UserError
from store.names import check_name

if TYPE_CHECKING:
    from embedders.spec import EmbedderSpec
    from flows.summary import StageSummary


def _embedder_names() -> str:
    from embedders import embedder_names

    return ", ".join(embedder_names())


def _precisions() -> str:
    from embedders.spec import PRECISIONS

    return " or ".join(PRECISIONS)


def _storages() -> str:
    from store.shards import STORAGES

    return " or ".join(STORAGES)


LATE_HELP: dict[str, Callable[[], str]] = {
    "{embedders}": _embedder_names, "{precisions}": _precisions, "{storages}": _storages}
"""Markers in option help texts and what replaces them when their command runs: listing the embedders, precisions
and shard storages imports the embedders and the shard format, a second that ``musictext --help`` need not pay."""


def fill_late_help(command: click.Command) -> None:
    """Replace the :data:`LATE_HELP` markers in ``command``'s option help texts, before it parses (and shows its
    ``--help``)."""
    for param in command.params:
        text = getattr(param, "help", None)
        for marker, names in LATE_HELP.items():
            if text and marker in text:
                text = text.replace(marker, names())
                param.help = text


class Commands(TyperGroup):
    """The command group that turns a :class:`UserError` from any command into one line and exit code 2, in one
    place: each command only raises. It also fills in the help texts of the one command that runs
    (:func:`fill_late_help`)."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as error:
            fail(str(error))

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                           list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            fill_late_help(command)
        return name, command, rest


out = Console(width=None if Console().is_terminal else 160)
app = typer.Typer(cls=Commands, help="Build music-text corpora: ingest, preprocess, embed and verify datasets.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

StageOption = Annotated[list[str] | None, typer.Option(
    "--stage", help=f"Only these stages, in pipeline order (repeatable): {', '.join(STAGES)}.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Also retry items that failed permanently.")]
OptionsOption = Annotated[list[str] | None, typer.Option(
    "--option", "-o", help="Source option KEY=VALUE (repeatable); `musictext datasets` lists them.")]
DaskOption = Annotated[bool, typer.Option("--dask", help="Run the work units on a Dask LocalCluster.")]
DaskAddressOption = Annotated[str | None, typer.Option(
    "--dask-address", help="Run the work units on the Dask cluster at this scheduler, e.g. tcp://10.0.0.5:8786.")]
WholeTracksOption = Annotated[bool, typer.Option(
    "--whole-tracks", help="Catalogue one item per whole file, as Navidrome embeds a track (default: clip_s "
                           "windows; settings clip_s = 0 or whole_tracks = [...] do the same).")]


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        options[key.strip()] = value.strip()
    return options


@contextlib.contextmanager
def prefect_mode() -> Iterator[None]:
    """Without a server, skip flow heartbeats: they only feed a server's crash detection and cost ~1 s
    per flow run when the flow ends, and watch Prefect's temporary server so that it ends with this command,
    even a killed one (``flows.ephemeral``). With ``PREFECT_API_URL`` set, Prefect's own settings apply."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from flows.ephemeral import watch_temporary_server  # loads Prefect's server: only when it runs here

    watch_temporary_server()
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def load_pipeline_flow() -> Any:
    """The pipeline flow, imported only when a run needs it: the import loads Prefect."""
    from flows.pipeline import pipeline as flow

    return flow


def run(flow_call: Any, *args: Any, **kwargs: Any) -> Any:
    """``flow_call(*args, **kwargs)`` in the Prefect mode of :func:`prefect_mode`. Check the user's input before
    calling it: a mistake found inside a flow costs Prefect's start-up and its failed-run log lines."""
    with prefect_mode():
        return flow_call(*args, **kwargs)


def check_models(models: list[str] | None) -> None:
    """Each of ``models`` is an embedder here (:class:`embedders.EmbedderUnavailableError` names the choices)."""
    from embedders import embedder_spec

    for model in models or []:
        embedder_spec(model)


def exit_on_problems(summaries: list[StageSummary]) -> None:
    """Exit with :data:`EXIT_PROBLEMS` when a verify stage among ``summaries`` has a verdict other than ok, so a
    schedule or CI can act on it (the summaries are printed first)."""
    from verification.report import VERDICT_OK

    failed = [s.dataset for s in summaries if s.stage == "verify" and s.verdict != VERDICT_OK]
    if failed:
        errors.print(f"verify found problems in {', '.join(failed)}: see the report(s) named above", soft_wrap=True)
        raise typer.Exit(EXIT_PROBLEMS)


def chosen_stages(stages: list[str] | None) -> list[str] | None:
    """``--stage`` values in pipeline order, None when none were given (the pipeline's default)."""
    try:
        return check_stages(stages) if stages else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--stage") from None


def print_summaries(summaries: list[StageSummary]) -> None:
    table = Table(title="What this run did")
    for column in ("dataset", "stage", "items", "done before", "worked", "ok", "failed", "skipped", "notes"):
        table.add_column(column, justify="right" if column not in ("dataset", "stage", "notes") else "left")
    for s in summaries:
        reasons = ", ".join(f"{k} ×{v}" for k, v in sorted(s.failures.items()))
        notes = "; ".join(part for part in (s.extra, reasons) if part)
        table.add_row(s.dataset, s.stage, str(s.items), str(s.done_before), str(s.worked), str(s.ok),
                      str(s.failed), str(s.skipped_permanent), notes)
    out.print(table)


@app.command()
def ingest(dataset: str, limit: Annotated[int | None, typer.Option(help="Catalogue at most N items.")] = None,
           subset: Annotated[str | None, typer.Option(help="Shorthand for -o subset=X.")] = None,
           split: Annotated[str | None, typer.Option(help="Shorthand for -o split=X.")] = None,
           option: OptionsOption = None, force: ForceOption = False, root: RootOption = None,
           dask: DaskOption = False, dask_address: DaskAddressOption = None,
           whole_tracks: WholeTracksOption = False) -> None:
    """Catalog a dataset and acquire its audio (incremental: only what is new or still missing)."""
    from downloaders import get_source
    from flows import stages

    options = parse_options(option) | {k: v for k, v in {"subset": subset, "split": split}.items() if v}
    get_source(dataset).check_options(options)
    data_root_of(root)
    print_summaries(run(stages.ingest, dataset, options, limit, force, root_arg(root), dask, dask_address,
                        whole_tracks))


@app.command()
def preprocess(dataset: str, force: ForceOption = False, root: RootOption = None, dask: DaskOption = False,
               dask_address: DaskAddressOption = None) -> None:
    """Cut and resample acquired audio into canonical 44.1 kHz 16-bit FLAC clips."""
    from downloaders import get_source
    from flows import stages

    get_source(dataset)
    stages.check_manifest(data_root_of(root), dataset)
    print_summaries([run(stages.preprocess, dataset, force, root_arg(root), dask, dask_address)])


@app.command()
def embed(dataset: str,
          model: Annotated[str, typer.Option(help="Audio embedder: {embedders} "
                                                  "(`musictext models list` says what each computes).")] = "dsp",
          weights: Annotated[Path | None, typer.Option(
              help="Directory holding the model's weights (default: the Hugging Face cache).")] = None,
          device: Annotated[list[str] | None, typer.Option(
              help="Device to run the model on, e.g. cuda:0 (repeatable; default: every GPU, else the CPU).")]
          = None,
          precision: Annotated[str | None, typer.Option(
              help="{precisions}: as Navidrome runs the model (default, setting embed_precision), "
                   "or bfloat16 autocast.")] = None,
          storage: Annotated[str | None, typer.Option(
              help="{storages}: how the shards store the vectors (default float32, setting "
                   "embed_storage); float16 halves them, within 0.9999 cosine.")] = None,
          force: ForceOption = False, root: RootOption = None, dask: DaskOption = False,
          dask_address: DaskAddressOption = None) -> None:
    """Embed every clip that has no vector from MODEL (in MODEL's space) yet into new HDF5 shards."""
    from embedders.spec import PRECISIONS
    from flows import stages
    from store.shards import STORAGES

    if precision is not None and precision not in PRECISIONS:
        raise typer.BadParameter(f"must be one of {', '.join(PRECISIONS)}", param_hint="--precision")
    if storage is not None and storage not in STORAGES:
        raise typer.BadParameter(f"must be one of {', '.join(STORAGES)}", param_hint="--storage")
    check_name(dataset, "dataset")
    check_models([model])
    stages.check_manifest(data_root_of(root), dataset)
    weights_arg = str(weights) if weights else None
    print_summaries([run(stages.embed, dataset, model, force, root_arg(root), weights_arg, device, dask,
                         dask_address, precision, storage)])


@app.command()
def verify(dataset: str,
           model: Annotated[list[str] | None, typer.Option(help="Models to check (default: all).")] = None,
           root: RootOption = None, dask: DaskOption = False, dask_address: DaskAddressOption = None) -> None:
    """Check clips and shards and write reports/<dataset>/verification.{json,md}; exit code 1 when the verdict is
    not ok."""
    from flows import stages

    check_name(dataset, "dataset")
    check_models(model)
    stages.check_manifest(data_root_of(root), dataset)
    summaries = [run(stages.verify, dataset, model, root_arg(root), dask, dask_address)]
    print_summaries(summaries)
    exit_on_problems(summaries)


@app.command()
def pipeline(dataset: Annotated[list[str] | None,
                                typer.Option("--dataset", "-d", help="Datasets (repeatable).")] = None,
             limit: Annotated[int | None, typer.Option(help="Catalogue at most N items per dataset.")] = None,
             model: Annotated[list[str] | None, typer.Option(help="Audio embedders (repeatable).")] = None,
             stage: StageOption = None, option: OptionsOption = None, force: ForceOption = False,
             root: RootOption = None, dask: DaskOption = False, dask_address: DaskAddressOption = None,
             in_process: Annotated[bool, typer.Option(
                 "--in-process", help="Embed and train here even when the server has the gpu deployments.")]
             = False, whole_tracks: WholeTracksOption = False) -> None:
    """catalog → acquire → preprocess → embed → verify (→ train), for each dataset."""
    from downloaders import get_source
    from flows.nothing_new import settled_run

    datasets = dataset or ["synthetic"]
    given = parse_options(option)
    per_dataset = {d: {k: v for k, v in given.items() if k in get_source(d).options} for d in datasets}
    unused = set(given) - {k for opts in per_dataset.values() for k in opts}
    if unused:
        raise typer.BadParameter(f"no dataset of this run takes {', '.join(sorted(unused))}", param_hint="--option")
    check_models(model)
    root_path = data_root_of(root)
    stages = chosen_stages(stage)
    settled = None if force else settled_run(datasets, per_dataset, limit, model or ["dsp"],
                                             stages or DEFAULT_STAGES, root_arg(root), whole_tracks=whole_tracks)
    summaries = settled or run(load_pipeline_flow(), datasets, per_dataset, limit, model or ["dsp"], force,
                               root_arg(root), stages=stages, dask=dask, dask_address=dask_address,
                               hand_off=not in_process, whole_tracks=whole_tracks)
    print_summaries(summaries)
    if settled:
        out.print("Nothing new: every stage is settled since its last run, so no flow was started "
                  "(`--force` plans every stage again).")
    out.print(f"\nData root: [bold]{root_path.path}[/]")
    for name in datasets:
        out.print(f"  {name}: manifest {root_path.manifest(name)}, clips {root_path.clip_dir(name)}/, "
                      f"report {root_path.reports_dir() / name / 'verification.md'}")
    exit_on_problems(summaries)


@app.command()
def status(root: RootOption = None) -> None:
    """Items per dataset per stage, and failures by reason."""
    from verification.report import status_counts

    root_path = data_root_of(root)
    rows = status_counts(root_path)
    if not rows:
        out.print(f"Nothing under {root_path.path} yet: try `musictext ingest synthetic --limit 20`.")
        return
    table = Table(title=f"musictext status — {root_path.path}")
    for column in ("dataset", "stage", "ok", "failed", "pending", "failures by reason"):
        table.add_column(column, justify="left" if column in ("dataset", "stage", "failures by reason") else "right")
    for row in rows:
        reasons = ", ".join(f"{k} ×{v}" for k, v in sorted(row.get("reasons", {}).items()))
        table.add_row(row["dataset"], row["stage"], str(row["ok"]), str(row["failed"]), str(row["pending"]), reasons)
    out.print(table)


@app.command()
def train(model: Annotated[str, typer.Option(help="Audio embedder whose space the text embedder learns.")] = "dsp",
          dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Datasets (repeatable).")] = None,
          head: Annotated[list[str] | None, typer.Option(help="frames and/or pooled (default: both).")] = None,
          run_id: Annotated[str | None, typer.Option(help="Run name (default: <model>-<datasets>).")] = None,
          epochs: Annotated[int | None, typer.Option(help="Passes over the training pairs.")] = None,
          max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (wins over --epochs).")] = None,
          batch_size: Annotated[int | None, typer.Option(help="Pairs per contrastive batch.")] = None,
          lr: Annotated[float | None, typer.Option(help="Learning rate of the head.")] = None,
          eval_every: Annotated[int | None, typer.Option(help="Validate and checkpoint every N steps.")] = None,
          freeze_encoder: Annotated[bool, typer.Option(help="Train the head only.")] = False,
          encoder: Annotated[str | None, typer.Option(help="Hugging Face id or path of the sentence encoder.")]
          = None,
          stage2: Annotated[float, typer.Option(help="Continue with stage 2 at this MSE weight (0: stage 1 only).")]
          = 0.0,
          device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
          devices: Annotated[int | None, typer.Option(
              help="Train data-parallel in N processes: N GPUs, or N gloo processes with --device cpu (default 1; "
                   "under torchrun or accelerate launch, their process count).")] = None,
          tracker: Annotated[list[str] | None, typer.Option(
              "--tracker", help="Also log every step to wandb or mlflow (repeatable or a comma list); TensorBoard "
                                "logs to runs/<id>/tensorboard unless `none` is given.")] = None,
          root: RootOption = None) -> None:
    """Train text embedders into MODEL's space (resumes an interrupted run, skips a finished one)."""
    given = {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "encoder": encoder,
             "eval_every": eval_every, "checkpoint_every": eval_every, "trackers": tracker, "devices": devices}
    options = {k: v for k, v in given.items() if v is not None} | {"freeze_encoder": freeze_encoder,
                                                                   "device": device}
    from training.distributed import is_main_process, launched_processes  # torch loads only for commands that train
    from training.run_plans import already_trained, train_configs

    if launched_processes() > 1:  # one of the processes torchrun or accelerate launch started: no flow
        from flows import learning

        summaries = learning.train_here(model, dataset, run_id, head, stage2, root_arg(root), options)
        if not is_main_process():
            return
    else:
        summaries = already_trained(train_configs(model, dataset, run_id, head, stage2, options), data_root_of(root))
        if summaries is None:
            from flows import learning  # Prefect loads only when a flow runs

            summaries = run(learning.train, model, dataset, run_id, head, stage2, root_arg(root), options)
    table = Table(title="Training runs")
    for column in ("run", "head", "stage", "steps", "best step", "val t→m R@10", "val t→m MRR", "train/val/test"):
        table.add_column(column)
    for config, result in ((s.config, s.result) for s in summaries):
        sizes = "/".join(str(result.split_sizes.get(k, 0)) for k in ("train", "val", "test"))
        steps = f"{result.step}" + (" (early stop)" if result.stopped_early else "")
        table.add_row(config.run_id, config.head, str(config.stage), steps, str(result.best_step),
                      f"{result.best_metrics.get('t2m_R@10', 0):.3f}", f"{result.best_metrics.get('t2m_MRR', 0):.3f}",
                      sizes)
    out.print(table)
    if summaries and "tensorboard" in summaries[0].config.trackers:
        out.print(f"curves of every step: tensorboard --logdir {summaries[0].result.run_dir.parent}", soft_wrap=True)


@app.command()
def evaluate(runs: Annotated[list[str], typer.Argument(help="Training runs to compare (same model and data).")],
             name: Annotated[str | None, typer.Option(
                 help="Report folder under reports/evaluation/ (default: latest, or DATASET with --on).")] = None,
             device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
             on: Annotated[str | None, typer.Option(
                 "--on", metavar="DATASET", help="Rank every item of this catalogued benchmark (e.g. song_describer) "
                                                 "instead of the test split.")] = None,
             root: RootOption = None) -> None:
    """Text→music and music→text retrieval of RUNS, their untrained twins and the prototype and linear baselines,
    on the test split or on every item of a benchmark dataset."""
    from flows.settling import evaluation_settling
    from training.config import run_config

    name = name or on or "latest"
    root_path = data_root_of(root)
    root_path.evaluation_dir(name)
    for run_id in runs:
        run_config(root_path, run_id)
    if on is not None:
        from training.evaluate_on import check_benchmark

        check_benchmark(root_path, runs, on)
    settling = evaluation_settling(root_path, name, runs, [run_config(root_path, run) for run in runs], device, on)
    result = settling.found()
    kept = result is not None
    if result is None:
        from flows import learning  # Prefect loads only when a flow runs

        result = run(learning.evaluate, runs, name, root_arg(root), device, on)
    print_retrieval(f"{on}, all captions" if on else "Test split", result["results"])
    for subset, results in result["subsets"].items():
        print_retrieval(f"{on}, {subset}", results)
    out.print(f"report: {result['report']}" + (" (kept: the same runs on the same data were evaluated before)"
                                               if kept else ""))


def print_retrieval(title: str, results: dict[str, dict[str, float]]) -> None:
    """One row per run, untrained twin and baseline, titled with the candidates ranked (and the texts, when items
    have several) and followed by the chance level."""
    first = next(iter(results.values()))
    candidates = (f"{int(first['candidates'])} music candidates, {int(first['m2t_candidates'])} text candidates"
                  if "m2t_candidates" in first else f"{int(first['candidates'])} candidates")
    table = Table(title=f"{title}, {candidates}")
    columns = ("t2m_R@1", "t2m_R@5", "t2m_R@10", "t2m_MRR", "t2m_median_rank", "m2t_R@10", "m2t_MRR")
    for column in ("text embedder", *columns):
        table.add_column(column.replace("t2m_", "text→music ").replace("m2t_", "music→text "))
    for label, metrics in results.items():
        table.add_row(label, *(f"{metrics[c]:.3f}" if "rank" not in c else f"{metrics[c]:g}" for c in columns))
    out.print(table)
    out.print(f"chance text→music R@10: {first['chance_R@10']:.3f}")


@app.command()
def search(text: str, model: Annotated[str, typer.Option(help="Audio embedder whose shards to search.")] = "dsp",
           k: Annotated[int, typer.Option(min=1, help="How many clips.")] = 10,
           dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
           run_id: Annotated[str | None, typer.Option("--run", help="Text embedder run (default: the newest "
                                                      "finished one for MODEL).")] = None,
           copy_to: Annotated[Path | None, typer.Option(help="Copy the clips found into this folder.")] = None,
           root: RootOption = None) -> None:
    """The clips closest to TEXT in MODEL's space, found with a trained text embedder."""
    from training.search_clips import search_clips

    found = search_clips(data_root_of(root), text, model, k=k, datasets=dataset, run_id=run_id)
    table = Table(title=f"{text!r} in {model} space ({found.run_id})")
    for column in ("#", "score", "item", "caption", "clip"):
        table.add_column(column)
    for rank, hit in enumerate(found.hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.item_id, escape(hit.caption), str(hit.clip))
    out.print(table)
    out.print(f"searched with {'; '.join(found.methods)} (`musictext index build --model {model}` indexes)")
    if copy_to:
        copied = found.copy_clips(copy_to)
        out.print(f"copied {len(copied)} clip(s) to {copy_to}")


app.command()(serve)
app.command("export")(export_run)
app.add_typer(index_app, name="index")
app.command("export-corpus")(export_corpus)


models_app = typer.Typer(help="Audio embedders: what each computes, and their weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(cache_dir: Annotated[Path | None, typer.Option(help="Hugging Face cache (default: HF_HUB_CACHE).")]
                = None) -> None:
    """Every embedder: its space, stored size, windows, and whether its weights are here (revision, sha256)."""
    from embedders import embedder_specs

    table = Table(title="Audio embedders")
    for column in ("model", "space", "dim", "windows", "weights", "here"):
        table.add_column(column)
    specs = embedder_specs().values()
    for spec in specs:
        table.add_row(spec.name, spec.space, f"{spec.stored_dim:,}", _windows(spec), *_weights_state(spec, cache_dir))
    out.print(table)
    for spec in specs:
        out.print(f"[bold]{spec.name}[/]: {escape(spec.summary)}")


def _windows(spec: EmbedderSpec) -> str:
    return f"{spec.window_s:g} s every {spec.hop_s:g} s at {spec.sample_rate} Hz"


def _weights_state(spec: EmbedderSpec, cache_dir: Path | None) -> tuple[str, str]:
    """The weights column (repository and pinned revision) and the "here" column (where, size, sha256)."""
    from embedders.weights import MissingWeightsError, locate_weights

    if spec.weights is None:
        return "none (weight-free)", "yes"
    pinned = f"{spec.weights.repo_id} @ {spec.weights.revision[:12]}"
    try:
        located = locate_weights(spec.weights, cache_dir=cache_dir)
    except MissingWeightsError:
        return pinned, f"no: `{spec.weights.fetch_command}` ({spec.weights.download_size})"
    size = located.weights_file.stat().st_size / 2**20
    return pinned, f"{located.directory} ({size:,.1f} MiB, sha256 {located.sha256[:16]})"


@models_app.command("fetch")
def models_fetch(model: str,
                 cache_dir: Annotated[Path | None, typer.Option(help="Hugging Face cache (default: HF_HUB_CACHE).")]
                 = None) -> None:
    """Download MODEL's weights at the pinned revision (needs the internet or settings.hf_endpoint)."""
    from embedders import embedder_specs
    from embedders.weights import fetch_weights
    from store.settings import load_settings

    specs = embedder_specs()
    weights = specs[model].weights if model in specs else None
    if weights is None:
        with_weights = ", ".join(name for name, spec in specs.items() if spec.weights is not None)
        reason = "it is weight-free" if model in specs else "no such embedder"
        fail(f"no weights to fetch for {model!r} ({reason}); models with weights: {with_weights}")
    located = fetch_weights(weights, endpoint=load_settings().hf_endpoint, cache_dir=cache_dir)
    out.print(f"{weights.title} at {located.revision}: {located.directory}\nsha256 {located.sha256}")


@app.command()
def datasets() -> None:
    """The sources musictext can ingest, what each needs, and its options."""
    from downloaders import all_sources, source_names

    table = Table(title="Datasets")
    for column in ("name", "what it is", "needs", "options"):
        table.add_column(column)
    for source in all_sources():
        options = "\n".join(f"{k}: {v}" for k, v in source.options.items()) or "—"
        table.add_row(source.name, source.description, source.needs, options)
    out.print(table)
    out.print(f"{len(source_names())} source(s).")


@app.command()
def server(host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
           port: Annotated[int, typer.Option(help="Port of the API and the UI.")] = 4200) -> None:
    """Start a local Prefect server (SQLite under PREFECT_HOME) for run history, the UI, schedules and workers."""
    from flows.deploy import prefect_executable

    errors.print(f"Prefect UI and API on http://{host}:{port}; in every other shell (CLI, workers):\n"
                 f"  export PREFECT_API_URL=http://{host}:{port}/api")
    # The UI asks the browser to call the API at PREFECT_SERVER_UI_API_URL, which `--port` does not change.
    os.environ.setdefault("PREFECT_SERVER_UI_API_URL", f"http://{host}:{port}/api")
    os.execv(prefect_executable(), [prefect_executable(), "server", "start", "--host", host, "--port", str(port)])


@app.command()
def worker(pool: Annotated[str, typer.Option(help="Work pool: cpu or gpu.")] = "cpu",
           name: Annotated[str | None, typer.Option(help="Worker name (default: Prefect's).")] = None,
           limit: Annotated[int | None, typer.Option(
               help="Flow runs at once (default: 1 on the gpu pool, one GPU job at a time; else no limit).")]
           = None) -> None:
    """Start a process worker on POOL, running flow runs from this clone of the repository."""
    from flows.deploy import REPO, prefect_executable, require_server

    require_server()
    command = [prefect_executable(), "worker", "start", "--pool", pool, "--type", "process"]
    command += ["--name", name] if name else []
    limit = limit if limit is not None else (1 if pool == "gpu" else None)
    command += ["--limit", str(limit)] if limit else []
    os.environ.setdefault("MUSICTEXT_REPO", str(REPO))
    # Started in the background (`nohup … &`), a worker inherits an ignored SIGINT, and Prefect's worker
    # turns SIGTERM into SIGINT: restored, one SIGTERM (systemd, kill) stops it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(command[0], command)


@app.command()
def deploy(root: RootOption = None) -> None:
    """Create the cpu and gpu work pools and every deployment of deployments/prefect.yaml (idempotent)."""
    from prefect.client.orchestration import get_client

    from flows.deploy import deploy_all, ensure_pools, ensure_result_storage, require_server

    require_server()
    with get_client(sync_client=True) as client:
        pools = ensure_pools(client)
        storage = ensure_result_storage(client, data_root_of(root))
    for pool, outcome in pools.items():
        out.print(f"work pool {pool}: {outcome}")
    out.print(storage)
    deploy_all()
    out.print("Start workers: `musictext worker --pool cpu` and, on a GPU machine, `musictext worker --pool gpu`.")


@app.command()
def reprocess(dataset: str, stage: StageOption = None,
              model: Annotated[list[str] | None, typer.Option(help="Audio embedders (repeatable).")] = None,
              limit: Annotated[int | None, typer.Option(help="Catalogue at most N items.")] = None,
              force: ForceOption = False,
              wait: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = True,
              deployment: Annotated[str, typer.Option(help="The pipeline deployment to run.")] = "pipeline/cpu",
              whole_tracks: WholeTracksOption = False) -> None:
    """Re-process DATASET on the server: a run of the pipeline deployment, followed here until it ends."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_UI_URL

    from flows import pipeline as pipeline_flow
    from flows.deploy import require_server
    from flows.watch import follow

    given = {"datasets": [dataset], "stages": chosen_stages(stage), "models": model, "limit": limit,
             "force": force or None, "whole_tracks": whole_tracks or None}
    parameters = {key: value for key, value in given.items() if value is not None}
    require_server()
    with get_client(sync_client=True) as client:
        flow_run = run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False,
                                  flow_run_name=pipeline_flow.run_name([dataset], model))
        out.print(f"flow run {flow_run.name}: {PREFECT_UI_URL.value()}/runs/flow-run/{flow_run.id}")
        if not wait:
            return
        ended = follow(client, flow_run.id, out)
    state = ended.state
    out.print(f"{ended.name}: {state.name}" + (f" ({state.message})" if state.message else ""))
    if not state.is_completed():
        raise typer.Exit(1)
