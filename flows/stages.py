"""The Prefect flows of the stages (:mod:`flows.pipeline` chains them).

Thin by design: each flow holds its stage's lock on the dataset (:mod:`flows.exclusive`), reads the
manifest, asks :mod:`flows.plan` what is left, cuts it into work units of ``unit_size`` items and submits
one task per unit (never per item: Prefect costs ~30 ms per task run) to a bounded thread pool or a Dask
cluster (:mod:`flows.scale_out`). The same code runs embedded, on a server and on work pools.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from downloaders import get_source
from downloaders.base import SourceContext, SourceError
from embedders import embedder_spec, embedder_specs
from embedders.spec import EmbedderSpec
from flows import work
from flows.devices import (
    check_weights,
    device_runner,
    embed_devices,
    loaded_embedder,
    unit_device,
)
from flows.exclusive import one_run_at_a_time
from flows.plan import chunks, plan_acquire, plan_embed, plan_preprocess, plan_verify, spread
from flows.progress import StageProgress, artifact_key
from flows.scale_out import unit_runner
from flows.settling import (
    Settling,
    acquire_settling,
    catalog_settling,
    embed_settling,
    preprocess_settling,
    verify_settling,
)
from flows.summary import StageSummary
from store.atomic import sweep_stale_temps
from store.layout import DataRoot
from store.manifest import (
    ManifestRow,
    canonical_row,
    count_manifest,
    iter_manifest,
    manifest_ids,
    merge_rows,
    read_manifest_table,
    write_manifest,
)
from store.quarantine import quarantined
from store.settings import Settings, load_settings
from store.status import compact, failures, read_status
from verification.audio import Problem
from verification.report import Checks, Target, dataset_report, shard_record_path, target_label, write_report
from verification.shards import Expected, check_model_shards, old_space_problems


class SettingsThreadPool(ThreadPoolTaskRunner):
    """The flows' bounded thread pool, sized by ``settings.workers`` when a flow run starts: read at import, the
    settings would make a bad ``musictext.toml`` break every command, ``musictext --help`` included."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def duplicate(self) -> SettingsThreadPool:
        return type(self)()

    def __enter__(self) -> SettingsThreadPool:
        self._max_workers = load_settings().workers
        return super().__enter__()


RUNNER = SettingsThreadPool()


def _context(root: str | None) -> tuple[DataRoot, Settings]:
    settings = load_settings(root=root)
    return DataRoot(settings.root), settings


def _sweep(root: DataRoot, dataset: str) -> None:
    """Remove temporary files left by killed runs, so no partial file outlives a crash."""
    for directory in [root.path / "manifests", root.raw_dir(dataset), root.clip_dir(dataset),
                      *root.path.glob(f"status/*/{dataset}"), *root.path.glob(f"embeddings/*/*/{dataset}")]:
        removed = sweep_stale_temps(directory)
        if removed:
            get_run_logger().info("removed %d temporary file(s) left by an interrupted run in %s",
                                  len(removed), directory)


def _publish(summary: StageSummary, root: DataRoot) -> StageSummary:
    logger = get_run_logger()
    _note_quarantined(summary, root)
    logger.info("%s %s: %d items, %d done before, %d worked (%d ok, %d failed), %d skipped (permanent failure)",
                summary.stage, summary.dataset, summary.items, summary.done_before, summary.worked,
                summary.ok, summary.failed, summary.skipped_permanent)
    for reason, count in sorted(summary.failures.items()):
        logger.warning("%s %s: %d item(s) failed with reason %r", summary.stage, summary.dataset, count, reason)
    if FlowRunContext.get() is not None:
        create_table_artifact([summary.row()], key=artifact_key(summary.dataset, summary.stage, "counts"),
                              description=f"{summary.stage} of {summary.dataset}")
    return summary


def _note_quarantined(summary: StageSummary, root: DataRoot) -> None:
    """Name in the summary's notes the damaged files of its dataset set aside since this flow run began (each
    was announced once, in a warning line, when it was moved)."""
    context = FlowRunContext.get()
    moved = quarantined(root, summary.dataset, since=context.start_time) if context is not None else []
    if moved:
        note = f"damaged, moved to quarantine/: {', '.join(m.original for m in moved)}"
        summary.extra = "; ".join(part for part in (summary.extra, note) if part)


def _manifest_quarantined(root: DataRoot, dataset: str) -> bool:
    """Whether the dataset has no manifest because it was damaged and set aside (not rebuilt since)."""
    manifest = root.manifest(dataset)
    original = str(manifest.relative_to(root.path))
    return not manifest.exists() and any(m.original == original for m in quarantined(root, dataset))


def _run_units(stage: str, dataset: str, unit_task: Any, units: list[tuple], sizes: list[int],
               runner: TaskRunner | None = None) -> list[work.UnitResult]:
    """Submit one task per unit (to ``runner`` if given, else the flow's), advance progress as they finish,
    and decide on every failed future.

    A unit that crashes (disk full, a bug outside the per-item guard) does not stop the others; the stage
    raises after all units have finished, naming how many crashed and why.
    """
    logger = get_run_logger()
    results: list[work.UnitResult] = []
    crashed: list[str] = []
    with StageProgress(stage, dataset, sum(sizes)) as progress:
        labels = [f"{stage}-{dataset}-{i + 1}-of-{len(units)}" for i in range(len(units))]
        futures: list[PrefectFuture] = [
            runner.submit(unit_task, inspect.signature(unit_task.fn).bind(*args, label=label).arguments)
            if runner else unit_task.submit(*args, label=label)
            for args, label in zip(units, labels, strict=True)
        ]
        size_of = {id(f): n for f, n in zip(futures, sizes, strict=True)}
        for future in as_completed(futures):
            progress.advance(size_of[id(future)])
            try:
                result: work.UnitResult = future.result()
            except Exception as error:
                logger.error("%s %s: a unit crashed: %s: %s", stage, dataset, type(error).__name__, error)
                crashed.append(f"{type(error).__name__}: {error}")
                continue
            results.append(result)
            for record in result.records:
                if not record.is_ok:
                    logger.warning("%s %s: %s failed (%s): %s", stage, dataset, record.item_id,
                                   record.reason, record.detail)
    if crashed:
        raise RuntimeError(f"{len(crashed)} of {len(units)} {stage} unit(s) of {dataset} crashed: {crashed[0]}")
    return results


def _settle(records: Path, settling: Settling, before: dict[str, Any], summary: StageSummary,
            results: Sequence[work.UnitResult], own: Iterable[Path] = (), note: str = "") -> None:
    """End a stage run: fold its records into the compacted index, then stamp the stage as settled when it left
    nothing to retry (:mod:`flows.settling`); both under the stage's lock, after the last record is written."""
    compact(records)
    settling.settle(before, summary, (r for result in results for r in result.records), list(own), note)


# Each unit task takes a ``label`` only to name its run in the UI ("embed-fma-3-of-12").
UNIT_TASK = {"task_run_name": "{label}", "cache_policy": NO_CACHE}


@task(name="acquire-unit", **UNIT_TASK)
def acquire_task(rows: list[ManifestRow], ctx: SourceContext, *, label: str) -> work.UnitResult:
    return work.acquire_unit(rows, ctx)


@task(name="preprocess-unit", **UNIT_TASK)
def preprocess_task(rows: list[ManifestRow], root: DataRoot, settings: Settings, *, label: str) -> work.UnitResult:
    return work.preprocess_unit(rows, root, settings)


@task(name="adopt-clips", **UNIT_TASK)
def adopt_task(rows: list[ManifestRow], root: DataRoot, *, label: str) -> work.UnitResult:
    return work.adopt_clips(rows, root)


@task(name="embed-unit", **UNIT_TASK)
def embed_task(dataset: str, model: str, item_ids: list[str], root: DataRoot, settings: Settings,
               weights: str | None, device: str | None, *, label: str) -> work.UnitResult:
    device = unit_device(device)
    get_run_logger().info("%s: %d clip(s) with %s on %s (process %d)", label, len(item_ids), model, device,
                          os.getpid())
    return work.embed_unit(dataset, model, item_ids, root, settings, weights=weights, device=device)


@task(name="verify-unit", **UNIT_TASK)
def verify_task(rows: list[ManifestRow], root: DataRoot, settings: Settings, *, label: str) -> work.UnitResult:
    return work.verify_unit(rows, root, settings)


def check_manifest(root: DataRoot, dataset: str) -> None:
    """:class:`SourceError` when ``dataset`` has no manifest, set aside as damaged or never made; the CLI asks
    before it starts a stage's flow, the flow again when it reads the manifest."""
    if root.manifest(dataset).exists():
        return
    if _manifest_quarantined(root, dataset):
        raise SourceError(f"the manifest of {dataset!r} was damaged and is now in quarantine/ (see the warning "
                          f"above): `musictext ingest {dataset}` rebuilds it")
    raise SourceError(f"no manifest for {dataset!r} under {root.path}: run `musictext ingest {dataset}` first")


def _manifest(root: DataRoot, dataset: str) -> Path:
    """The manifest's path, once every row of it was decoded and checked (a damaged one is set aside here):
    planners then read its rows a batch at a time (:func:`store.manifest.iter_manifest`), never all at once."""
    rows = count_manifest(root.manifest(dataset))
    check_manifest(root, dataset)
    if not rows:
        raise SourceError(f"the manifest of {dataset!r} at {root.manifest(dataset)} has no items")
    return root.manifest(dataset)


def _empty_catalog(root: DataRoot, dataset: str, limit: int | None) -> SourceError:
    """What to say when a catalog ends with no items at all: which rows it rejected, or that it found none."""
    rejected = [r for r in read_status(root.status_dir("catalog", dataset)).values() if not r.is_ok]
    found = (f"all {len(rejected)} metadata row(s) it read were rejected (`musictext status` gives the reasons)"
             if rejected else "the source listed none with these options and settings")
    asked = " (--limit 0)" if limit == 0 else ""
    return SourceError(f"the catalog of {dataset!r} has no items{asked}: {found}; check its options "
                       "(`musictext datasets`) and mirrors")


@flow(name="catalog", flow_run_name="catalog-{dataset}", task_runner=RUNNER)
def catalog(dataset: str, options: dict[str, Any] | None = None, limit: int | None = None,
            root: str | None = None, whole_tracks: bool = False) -> StageSummary:
    """Read the source's metadata into the manifest; existing rows are kept, new ones added.

    ``whole_tracks``: one item per whole file for this run, as Navidrome embeds a track (else the settings
    decide: ``clip_s`` windows unless ``clip_s = 0`` or the dataset is in ``whole_tracks``)."""
    settings = load_settings(root=root, clip_s=0.0 if whole_tracks else None)
    data_root = DataRoot(settings.root)
    source = get_source(dataset)
    source.check_options(options or {})
    with one_run_at_a_time(data_root, "catalog", dataset):
        _sweep(data_root, dataset)
        ctx = SourceContext(data_root, settings, options or {}, limit)
        existing = read_manifest_table(data_root.manifest(dataset))
        listed = [canonical_row(row) for row in source.catalog(ctx)]
        update = merge_rows(existing, listed)
        if not update.table.num_rows:
            raise _empty_catalog(data_root, dataset, limit)
        if update.dirty:
            write_manifest(data_root.manifest(dataset), update.table)
        summary = StageSummary(dataset, "catalog", update.table.num_rows, existing.num_rows,
                               update.added + update.changed, update.added + update.changed, 0, 0, {},
                               extra=f"{update.added} added, {update.changed} changed")
        catalog_settling(data_root, dataset, listed).settle({}, summary, [])
    return _publish(summary, data_root)


@flow(name="acquire", flow_run_name="acquire-{dataset}", task_runner=RUNNER)
def acquire(dataset: str, options: dict[str, Any] | None = None, force: bool = False, root: str | None = None,
            dask: bool = False, dask_address: str | None = None) -> StageSummary:
    """Fetch (or render) the audio of every catalogued item that does not have it yet."""
    data_root, settings = _context(root)
    source = get_source(dataset)
    with one_run_at_a_time(data_root, "acquire", dataset):
        _sweep(data_root, dataset)
        settling = acquire_settling(data_root, dataset, options or {})
        before = settling.before()
        manifest = _manifest(data_root, dataset)
        plan = plan_acquire(iter_manifest(manifest), data_root, source, force=force)
        ctx = SourceContext(data_root, settings, options or {})
        units = chunks(plan.todo, settings.unit_size)
        with unit_runner(dask, dask_address, settings.workers) as runner:
            results = _run_units("acquire", dataset, acquire_task, [(u, ctx) for u in units],
                                 [len(u) for u in units], runner)
        summary = StageSummary.from_plan(dataset, "acquire", plan, results)
        _settle(data_root.status_dir("acquire", dataset), settling, before, summary, results, own=plan.folders)
    return _publish(summary, data_root)


@flow(name="preprocess", flow_run_name="preprocess-{dataset}", task_runner=RUNNER)
def preprocess(dataset: str, force: bool = False, root: str | None = None, dask: bool = False,
               dask_address: str | None = None) -> StageSummary:
    """Decode, clip and resample acquired audio into canonical 44.1 kHz 16-bit FLAC clips."""
    data_root, settings = _context(root)
    with one_run_at_a_time(data_root, "preprocess", dataset):
        _sweep(data_root, dataset)
        settling = preprocess_settling(data_root, dataset)
        before = settling.before()
        plan = plan_preprocess(iter_manifest(_manifest(data_root, dataset)), data_root, dataset, force=force)
        units = spread(plan.todo, settings.unit_size, settings.workers)
        adopted = [adopt_task(plan.adopt, data_root, label=f"adopt-clips-{dataset}")] if plan.adopt else []
        with unit_runner(dask, dask_address, settings.workers) as runner:
            results = adopted + _run_units("preprocess", dataset, preprocess_task,
                                           [(u, data_root, settings) for u in units], [len(u) for u in units], runner)
        summary = StageSummary.from_plan(dataset, "preprocess", plan, results)
        if plan.adopt:
            summary.extra = f"{len(plan.adopt)} clip(s) kept from an interrupted run or a lost record"
        _settle(data_root.status_dir("preprocess", dataset), settling, before, summary, results)
    return _publish(summary, data_root)


@flow(name="embed", flow_run_name="embed-{dataset}-{model}", task_runner=RUNNER, persist_result=True)
def embed(dataset: str, model: str = "dsp", force: bool = False, root: str | None = None,
          weights: str | None = None, devices: list[str] | None = None, dask: bool = False,
          dask_address: str | None = None, precision: str | None = None,
          storage: str | None = None) -> StageSummary:
    """Embed every clip that has no vector from ``model`` yet into new append-only HDF5 shards.

    ``weights``: a directory holding the model's weights (default: ``weights_dirs`` in the settings, then
    the Hugging Face cache). ``devices``: where the model runs (default: ``embed_devices``, then every
    visible GPU, then the CPU). ``precision``: ``reference`` or ``bf16`` (default: the setting
    ``embed_precision``). ``storage``: how the shards store the vectors, ``float32`` or ``float16`` (default: the
    setting ``embed_storage``). Missing weights stop the flow here, before any work. The weight-free
    ``dsp`` runs its units like the other stages (on Dask when asked); the others on their devices.
    The vectors go to ``embeddings/<space>/<model>/<dataset>``: only vectors of the model's current space
    count as done, so shards of an older space are re-embedded into a new directory, never mixed with it.
    The result is persisted: a pipeline that handed this run to the ``gpu`` pool reads it back.
    """
    settings = load_settings(root=root, embed_precision=precision, embed_storage=storage)
    data_root = DataRoot(settings.root)
    spec = embedder_spec(model)
    weights = weights or _configured_weights(settings, model)
    devices = embed_devices(devices or settings.embed_devices) if spec.device else ["cpu"]
    if len(devices) == 1:
        loaded_embedder(model, weights, devices[0], settings.embed_precision)
    else:
        check_weights(model, weights)
    with one_run_at_a_time(data_root, f"embed-{model}", dataset):
        _sweep(data_root, dataset)
        settling = embed_settling(data_root, dataset, model, spec.space)
        before = settling.before()
        plan = plan_embed(iter_manifest(_manifest(data_root, dataset)), data_root, dataset, model, spec.space,
                          force=force)
        units = chunks([r.item_id for r in plan.todo], settings.unit_size)
        unit_device = devices[0] if len(devices) == 1 else None
        args = [(dataset, model, u, data_root, settings, weights, unit_device) for u in units]
        sizes = [len(u) for u in units]
        if spec.device:
            get_run_logger().info("embedding with %s (space %s, precision %s, stored as %s) on %s", model,
                                  spec.space, settings.embed_precision, settings.embed_storage, ", ".join(devices))
            runner_context = device_runner(devices)
        else:
            runner_context = unit_runner(dask, dask_address, settings.workers)
        with runner_context as runner:
            results = _run_units(f"embed-{model}", dataset, embed_task, args, sizes, runner)
        summary = StageSummary.from_plan(dataset, f"embed:{model}", plan, results)
        summary.extra = f"{sum(r.shard is not None for r in results)} new shard(s)"
        _settle(data_root.embed_status_dir(model, dataset, spec.space), settling, before, summary, results)
    return _publish(summary, data_root)


def _configured_weights(settings: Settings, model: str) -> str | None:
    directory = settings.weights_dirs.get(model)
    return str(directory) if directory else None


@flow(name="verify", flow_run_name="verify-{dataset}", task_runner=RUNNER)
def verify(dataset: str, models: list[str] | None = None, root: str | None = None, dask: bool = False,
           dask_address: str | None = None) -> StageSummary:
    """Check clips and shards, and write the dataset report (JSON + Markdown) under ``reports/``.

    ``models``: whose shards to check (default: every model with shards or records for the dataset). Shards
    of a space other than the model's current one are reported as ``old_space``, with the command that
    re-embeds them."""
    data_root, settings = _context(root)
    with one_run_at_a_time(data_root, "verify", dataset):
        settling = verify_settling(data_root, dataset, models, settings)
        before = settling.before()
        manifest = _manifest(data_root, dataset)
        plan = plan_verify(iter_manifest(manifest), data_root, dataset)
        units = chunks(plan.todo, settings.unit_size)
        with unit_runner(dask, dask_address, settings.workers) as runner:
            results = _run_units("verify", dataset, verify_task, [(u, data_root, settings) for u in units],
                                 [len(u) for u in units], runner)
        in_manifest = set(manifest_ids(manifest))
        failed, passed = failures(data_root.status_dir("verify", dataset))
        problems = [r for item_id, r in failed.items() if item_id in in_manifest]
        current, old = _embedding_targets(data_root, dataset, models)
        checks = Checks(
            clips_checked=len(passed & in_manifest) + len(problems),
            clip_problems=[Problem(r.item_id, r.reason or "unspecified", r.detail or "") for r in problems],
            shards={target_label(t): check_model_shards(data_root.shard_dir(t[1], dataset, t[0]),
                                                         _expected(embedder_spec(t[1])), manifest_ids=in_manifest,
                                                         record=shard_record_path(data_root, dataset, t))
                    for t in current},
            old_spaces=old_space_problems(old, {name: spec.space for name, spec in embedder_specs().items()}),
        )
        report = dataset_report(data_root, dataset, targets=current, checks=checks)
        json_path, md_path = write_report(data_root, report)
        summary = StageSummary.from_plan(dataset, "verify", plan, results)
        shard_problems = sum(len(c.problems) for c in checks.shards.values())
        summary.extra = f"verdict {report.verdict}; report {md_path}; {shard_problems} shard problem(s)"
        summary.verdict = report.verdict
        _settle(data_root.status_dir("verify", dataset), settling, before, summary, results)
    trusted = sum(c.trusted_shards for c in checks.shards.values())
    if trusted:
        summary.extra += f"; {trusted} unchanged shard(s) trusted from an earlier verify"
    if FlowRunContext.get() is not None:
        create_markdown_artifact(md_path.read_text(), key=artifact_key(dataset, "verification-report"),
                                 description=f"verification report of {dataset}")
    return _publish(summary, data_root)


def _embedding_targets(root: DataRoot, dataset: str, models: list[str] | None) -> tuple[list[Target], list[Path]]:
    """The ``(space, model)`` targets of ``dataset`` in each model's current space, and the shard directories
    of every other space (the layout before spaces, or a space a model has left)."""
    specs = {name: embedder_spec(name) for name in models} if models is not None else embedder_specs()
    found = [(space, model) for space, model in root.embedded(dataset) if model in specs]
    wanted = models if models is not None else sorted({model for _, model in found})
    current = [(specs[model].space, model) for model in wanted]
    old_layout = [d for d in root.legacy_shard_dirs(dataset) if models is None or d.parent.name in specs]
    other_spaces = [root.shard_dir(model, dataset, space) for space, model in found
                    if space != specs[model].space and root.shard_dir(model, dataset, space).is_dir()]
    return current, old_layout + other_spaces


def _expected(spec: EmbedderSpec) -> Expected:
    """What ``spec``'s shards must be: its space, and its width for its pinned weights (any, if weight-free)."""
    return Expected(spec.space, spec.stored_dim, spec.weights.revision if spec.weights else None)


@flow(name="ingest", flow_run_name="ingest-{dataset}", task_runner=RUNNER)
def ingest(dataset: str, options: dict[str, Any] | None = None, limit: int | None = None,
           force: bool = False, root: str | None = None, dask: bool = False,
           dask_address: str | None = None, whole_tracks: bool = False) -> list[StageSummary]:
    """Catalog then acquire: what a scheduled incremental ingestion of one dataset runs. Acquire is skipped when
    it is settled (:mod:`flows.nothing_new`): the catalog added nothing and no audio or record has changed."""
    from flows.nothing_new import unless_settled

    listed = catalog(dataset, options, limit, root, whole_tracks)
    settling = acquire_settling(DataRoot(load_settings(root=root).root), dataset, options or {})
    return [listed, unless_settled(settling, force, lambda: acquire(dataset, options, force, root, dask=dask,
                                                                    dask_address=dask_address))]
