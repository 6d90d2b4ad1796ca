"""Dataset reports: how far each manifest item got through the stages, what failed and why, and what the
verification checks found, as JSON for machines and Markdown for people under ``reports/<dataset>/``.

The verdict is "ok" only when nothing is unexplained: every item is done through the last stage or has a
recorded failure with a reason, and the checks found no problem. A user who runs the whole pipeline
should never have to guess why an item is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import soundfile as sf

from store import __version__
from store.atomic import write_text_atomic
from store.layout import DataRoot, clip_name
from store.manifest import ManifestRow, iter_manifest, manifest_ids
from store.names import check_name
from store.quarantine import Quarantined, quarantined
from store.shard_ids import embedded_ids
from store.status import StatusRecord, failures
from verification.audio import Problem
from verification.shards import ShardCheck

EXAMPLES_PER_REASON = 5
VERDICT_OK = "ok"
VERDICT_UNEXPLAINED = "unexplained_failures"


@dataclass(frozen=True)
class Example:
    item_id: str | None
    detail: str


@dataclass
class ReasonGroup:
    """Failures or problems that share a ``reason``; ``classes`` counts them by failure class (stage
    failures only: verification problems have none)."""

    reason: str
    count: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)


@dataclass
class StageSummary:
    stage: str
    model: str | None
    ok: int
    failed: int
    pending: int
    hours_ok: float
    failures: list[ReasonGroup]

    @property
    def label(self) -> str:
        return _label(self.stage, self.model)


@dataclass
class Checks:
    """What the verify flow found: ``check_clip`` problems over ``clips_checked`` clips, one
    :class:`ShardCheck` per embedding target (:func:`target_label`), and shards of old spaces."""

    clips_checked: int = 0
    clip_problems: list[Problem] = field(default_factory=list)
    shards: dict[str, ShardCheck] = field(default_factory=dict)
    old_spaces: list[Problem] = field(default_factory=list)


Target = tuple[str, str]
"""``(space, model)``: where one model's vectors of one space live (``embeddings/<space>/<model>/``)."""


def target_label(target: Target) -> str:
    """``<space>/<model>``, as on disk: how reports name a model's vectors."""
    space, model = target
    return f"{space}/{model}"


def shard_record_path(root: DataRoot, dataset: str, target: Target) -> Path:
    """``reports/<dataset>/verified-shards/<space>/<model>.json``: which of the target's shards verify found sound
    (:mod:`verification.shard_record`). Beside the reports rather than the shards, which are append-only; removing
    it makes the next verify read every vector again."""
    space, model = target
    return root.reports_dir() / check_name(dataset, "dataset") / "verified-shards" / check_name(space, "space") / (
        f"{check_name(model, 'model')}.json")


@dataclass
class CheckSummary:
    name: str
    model: str | None
    checked: int
    """Clips for the clip check, embedding rows for a shard check."""
    problems: int
    reasons: list[ReasonGroup]
    shards: int | None = None
    model_revision: str | None = None
    dim: int | None = None
    trusted_shards: int = 0
    """Shards whose vectors an earlier verify read and found sound, unchanged since, so not read again."""
    trusted_rows: int = 0


@dataclass
class Stalled:
    """Items that stopped at ``stage`` (of ``model``) with neither an output nor a recorded failure there."""

    stage: str
    model: str | None
    count: int
    examples: list[str]

    @property
    def label(self) -> str:
        return _label(self.stage, self.model)


@dataclass
class DatasetReport:
    dataset: str
    created_at: str
    musictext_version: str
    verdict: str
    items: int
    hours: float
    items_without_duration: int
    stages: list[StageSummary]
    checks: list[CheckSummary]
    stalled: list[Stalled]
    paths: dict[str, str]
    quarantined: list[Quarantined] = field(default_factory=list)
    """Damaged files of the dataset set aside under ``quarantine/``, still there; their items were planned again,
    so they explain nothing and change no verdict."""

    @property
    def problems(self) -> int:
        return sum(check.problems for check in self.checks)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class _StageInput:
    stage: str
    model: str | None
    records: dict[str, StatusRecord]
    done: set[str] | None
    """Items whose output exists, for stages that own one; ``None`` when an ok record is what counts."""

    def is_done(self, item_id: str) -> bool:
        if self.done is not None:
            return item_id in self.done
        record = self.records.get(item_id)
        return record is not None and record.is_ok

    def explains(self, item_id: str) -> bool:
        record = self.records.get(item_id)
        return record is not None and not record.is_ok and bool(record.reason)


def stage_summary(
    stage: str,
    manifest: AbstractSet[str],
    records: Mapping[str, StatusRecord],
    *,
    done: set[str] | None = None,
    durations: Mapping[str, float] | None = None,
    model: str | None = None,
) -> StageSummary:
    """Counts of one stage over the ``manifest``'s item ids.

    An item is ok when its output exists (``done``, for stages that own an output) or, without ``done``,
    when its latest record says ok; failed when its latest record is a failure; pending otherwise. Failed
    records of items outside the manifest count too: they are rows the catalog rejected.
    """
    ok_ids = (done if done is not None else {i for i, r in records.items() if r.is_ok}) & manifest
    failed = [record for item_id, record in records.items() if not record.is_ok and item_id not in ok_ids]
    pending = len(manifest) - len(ok_ids) - len({r.item_id for r in failed if r.item_id in manifest})
    seconds_ok = sum(durations.get(item_id, 0.0) for item_id in ok_ids) if durations else 0.0
    groups = _group((r.reason or "unspecified", r.item_id, r.detail or "", r.failure_class or "unknown")
                    for r in failed)
    return StageSummary(stage, model, len(ok_ids), len(failed), pending, round(seconds_ok / 3600, 6), groups)


def dataset_report(root: DataRoot, dataset: str, *, targets: Sequence[Target], checks: Checks) -> DatasetReport:
    """The report of one dataset after the verify checks ran; reads manifests, records, clips and shards."""
    manifest = root.manifest(dataset)
    item_ids = manifest_ids(manifest)
    if not manifest.exists():  # never catalogued, or damaged and just set aside
        raise FileNotFoundError(f"{dataset} has no manifest at {manifest}; "
                                f"run `musictext ingest {dataset}` first")
    preprocessed = _preprocessed(root, dataset, item_ids)
    durations = _durations(root, dataset, iter_manifest(manifest), preprocessed)
    embedded = {
        target: checks.shards[target_label(target)].item_ids if target_label(target) in checks.shards
        else embedded_ids(root.shard_dir(target[1], dataset, target[0]))
        for target in targets
    }
    manifest = set(item_ids)
    inputs = _stage_inputs(root, dataset, manifest, preprocessed, embedded)
    stages = [
        stage_summary(i.stage, manifest, i.records, done=i.done, durations=durations, model=i.model)
        for i in inputs
    ]
    check_summaries = _check_summaries(checks)
    stalled = _stalled(item_ids, [i for i in inputs if i.stage not in ("catalog", "verify")])
    unexplained = stalled or any(check.problems for check in check_summaries)
    return DatasetReport(
        dataset=dataset,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        musictext_version=__version__,
        verdict=VERDICT_UNEXPLAINED if unexplained else VERDICT_OK,
        items=len(item_ids),
        hours=round(sum(durations.values()) / 3600, 6),
        items_without_duration=len(item_ids) - len(durations),
        stages=stages,
        checks=check_summaries,
        stalled=stalled,
        paths=_paths(root, dataset, targets),
        quarantined=quarantined(root, dataset),
    )


def write_report(root: DataRoot, report: DatasetReport) -> tuple[Path, Path]:
    """Write ``reports/<dataset>/verification.json`` and ``.md`` atomically; returns both paths."""
    directory = root.reports_dir() / report.dataset
    json_path, markdown_path = directory / "verification.json", directory / "verification.md"
    write_text_atomic(json_path, report.to_json())
    write_text_atomic(markdown_path, render_markdown(report))
    return json_path, markdown_path


def status_counts(root: DataRoot) -> list[dict[str, object]]:
    """Counts per stage for every dataset, without running checks: what ``musictext status`` shows.

    Reads only manifests, status records, the clip directory listing and shard item ids. A dataset whose
    manifest turns out damaged (set aside as it is read) has nothing to count until its next catalog.
    """
    counts: list[dict[str, object]] = []
    for dataset in root.datasets():
        item_ids = manifest_ids(root.manifest(dataset))
        if not root.manifest(dataset).exists():
            continue
        embedded = {(space, model): embedded_ids(root.shard_dir(model, dataset, space))
                    for space, model in root.embedded(dataset)}
        manifest = set(item_ids)
        for i in _stage_inputs(root, dataset, manifest, _preprocessed(root, dataset, item_ids), embedded):
            summary = stage_summary(i.stage, manifest, i.records, done=i.done, model=i.model)
            counts.append({"dataset": dataset, "stage": summary.label, "model": i.model, "ok": summary.ok,
                           "failed": summary.failed, "pending": summary.pending,
                           "reasons": {group.reason: group.count for group in summary.failures}})
    return counts


def _stage_inputs(
    root: DataRoot,
    dataset: str,
    manifest: set[str],
    preprocessed: set[str],
    embedded: Mapping[Target, set[str]],
) -> list[_StageInput]:
    def stage(name: str, model: str | None, directory: Path, done: set[str] | None) -> _StageInput:
        """Failed records only, as objects; an ok record counts through ``done`` (the ok ids when the stage has
        no output of its own to ask)."""
        failed, ok = failures(directory)
        return _StageInput(name, model, failed, done if done is not None else ok)

    return [
        stage("catalog", None, root.status_dir("catalog", dataset), manifest),
        stage("acquire", None, root.status_dir("acquire", dataset), None),
        stage("preprocess", None, root.status_dir("preprocess", dataset), preprocessed),
        *(stage("embed", target_label(target), root.embed_status_dir(target[1], dataset, target[0]), done)
          for target, done in embedded.items()),
        stage("verify", None, root.status_dir("verify", dataset), None),
    ]


def _preprocessed(root: DataRoot, dataset: str, item_ids: list[str]) -> set[str]:
    """Items whose canonical clip exists."""
    names = root.clip_names(dataset)
    return {item_id for item_id in item_ids if clip_name(item_id) in names}


def _durations(
    root: DataRoot, dataset: str, rows: Iterable[ManifestRow], preprocessed: set[str]
) -> dict[str, float]:
    """Seconds per item: the manifest's span where it has one, else the clip's length from its header."""
    durations = {}
    for row in rows:
        if row.start_s is not None and row.end_s is not None and row.end_s > row.start_s:
            durations[row.item_id] = row.end_s - row.start_s
        elif row.item_id in preprocessed:
            try:
                durations[row.item_id] = sf.info(str(root.clip_path(dataset, row.item_id))).duration
            except (sf.SoundFileError, RuntimeError):
                continue
    return durations


def _stalled(item_ids: list[str], chain: list[_StageInput]) -> list[Stalled]:
    """Items that stopped somewhere with no explanation, by the stage where they stopped.

    Each model's embed stage ends its own chain (acquire → preprocess → embed with that model). A stage
    counts as passed when it or a later stage of the chain has an output, so a missing acquire record
    does not matter for an item that already has a clip.
    """
    shared = [i for i in chain if i.stage != "embed"]
    branches = [[*shared, i] for i in chain if i.stage == "embed"] or [shared]
    stalled: dict[tuple[str, str | None], dict[str, None]] = {}
    for item_id in item_ids:
        for branch in branches:
            stage = _stalled_at(item_id, branch)
            if stage is not None:
                stalled.setdefault((stage.stage, stage.model), {})[item_id] = None
    return [
        Stalled(stage, model, len(ids), list(ids)[:EXAMPLES_PER_REASON])
        for (stage, model), ids in stalled.items()
    ]


def _stalled_at(item_id: str, branch: list[_StageInput]) -> _StageInput | None:
    for position, stage in enumerate(branch):
        if any(later.is_done(item_id) for later in branch[position:]):
            continue
        return None if stage.explains(item_id) else stage
    return None


def _label(stage: str, model: str | None) -> str:
    return f"{stage} ({model})" if model else stage


def _check_summaries(checks: Checks) -> list[CheckSummary]:
    summaries = [CheckSummary("clips", None, checks.clips_checked, len(checks.clip_problems),
                              _group_problems(checks.clip_problems))]
    for model, found in sorted(checks.shards.items()):
        summaries.append(CheckSummary(
            "shards", model, found.rows, len(found.problems), _group_problems(found.problems),
            shards=found.shards, model_revision=found.model_revision, dim=found.dim,
            trusted_shards=found.trusted_shards, trusted_rows=found.trusted_rows,
        ))
    if checks.old_spaces:
        summaries.append(CheckSummary("old-space shards", None, len(checks.old_spaces), len(checks.old_spaces),
                                      _group_problems(checks.old_spaces), shards=len(checks.old_spaces)))
    return summaries


def _group_problems(problems: list[Problem]) -> list[ReasonGroup]:
    return _group((p.reason, p.item_id, p.detail, None) for p in problems)


def _group(entries: Iterable[tuple[str, str | None, str, str | None]]) -> list[ReasonGroup]:
    """Group (reason, item id, detail, failure class) entries by reason, most frequent first."""
    groups: dict[str, ReasonGroup] = {}
    for reason, item_id, detail, failure_class in entries:
        group = groups.setdefault(reason, ReasonGroup(reason))
        group.count += 1
        if failure_class is not None:
            group.classes[failure_class] = group.classes.get(failure_class, 0) + 1
        if len(group.examples) < EXAMPLES_PER_REASON:
            group.examples.append(Example(item_id, detail))
    return sorted(groups.values(), key=lambda g: (-g.count, g.reason))


def _paths(root: DataRoot, dataset: str, targets: Sequence[Target]) -> dict[str, str]:
    paths = {
        "manifest": root.manifest(dataset),
        "clips": root.clip_dir(dataset),
        "status": root.path / "status",
        "reports": root.reports_dir() / dataset,
        **{f"embeddings/{target_label(t)}": root.shard_dir(t[1], dataset, t[0]) for t in targets},
    }
    return {name: str(path) for name, path in paths.items()}


def render_markdown(report: DatasetReport) -> str:
    """The report for people: verdict first, then stages, failures, check problems and where data lives."""
    lines = [
        f"# Verification report: {report.dataset}",
        "",
        *_overview(report),
        "",
        "## Stages",
        "",
        *_table(["stage", "ok", "failed", "pending", "duration ok"],
                [[s.label, s.ok, s.failed, s.pending, _clock(s.hours_ok)] for s in report.stages]),
        "",
        "## Failures",
        "",
        *_failures(report.stages),
        "",
        "## Verification checks",
        "",
        *_table(["check", "checked", "problems"],
                [[_check_label(c), _checked(c), c.problems] for c in report.checks]),
        "",
        *_problems(report.checks),
        *_stalled_lines(report.stalled),
        *_quarantine_lines(report.quarantined),
        "## Where the data lives",
        "",
        *_table(["what", "path"], [[name, f"`{path}`"] for name, path in sorted(report.paths.items())]),
    ]
    return "\n".join(lines) + "\n"


def _overview(report: DatasetReport) -> list[str]:
    stalled = sum(s.count for s in report.stalled)
    verdict = (
        "**ok**: every item is done through the last stage or has a recorded failure with a reason"
        if report.verdict == VERDICT_OK else
        f"**unexplained failures**: {stalled} stalled item(s) without a record, "
        f"{report.problems} verification problem(s)"
    )
    unknown = report.items_without_duration
    size = f"{report.items} items, {_clock(report.hours)} of audio"
    if unknown:
        size += f" ({unknown} of unknown duration)"
    return [
        f"Verdict: {verdict}.",
        "",
        f"{size}. Generated {report.created_at} by musictext {report.musictext_version}.",
    ]


def _failures(stages: list[StageSummary]) -> list[str]:
    rows = [
        [stage.label, f"`{group.reason}`", group.count, group.classes.get("permanent", 0),
         group.classes.get("transient", 0), _examples(group)]
        for stage in stages for group in stage.failures
    ]
    if not rows:
        return ["No stage recorded a failure."]
    return _table(["stage", "reason", "items", "permanent", "transient", "examples"], rows)


def _problems(checks: list[CheckSummary]) -> list[str]:
    rows = [
        [_check_label(check), f"`{group.reason}`", group.count, _examples(group)]
        for check in checks for group in check.reasons
    ]
    if not rows:
        return ["The checks found no problem.", ""]
    return [*_table(["check", "reason", "count", "examples"], rows), ""]


def _stalled_lines(stalled: list[Stalled]) -> list[str]:
    if not stalled:
        return []
    rows = [[s.label, s.count, ", ".join(f"`{item_id}`" for item_id in s.examples)] for s in stalled]
    return [
        "## Stalled items",
        "",
        "These items have neither an output nor a recorded failure at the stage where they stopped; "
        "run that stage for the dataset again.",
        "",
        *_table(["stopped at", "items", "examples"], rows),
        "",
    ]


def _quarantine_lines(moved: list[Quarantined]) -> list[str]:
    if not moved:
        return []
    rows = [[f"`{m.original}`", f"`{m.moved_to}`", m.at[:19].replace("T", " "), m.problem, m.next_step]
            for m in moved]
    return [
        "## Quarantined files",
        "",
        "These files could not be read (cut short or corrupt) and were moved aside, each alone: nothing else was "
        "lost, and what they held is planned again. Look at them under `quarantine/` (a note beside each says the "
        "same), then delete them.",
        "",
        *_table(["file", "moved to", "when (UTC)", "problem", "what happens next"], rows),
        "",
    ]


def _check_label(check: CheckSummary) -> str:
    return f"{check.name} ({check.model})" if check.model else check.name


def _checked(check: CheckSummary) -> str:
    if check.name == "old-space shards":
        return f"{check.checked} director{'y' if check.checked == 1 else 'ies'}"
    if check.model is None:
        return f"{check.checked} clips"
    trusted = (f" ({check.trusted_rows} rows in {check.trusted_shards} unchanged shard(s) trusted from an earlier "
               "verify)" if check.trusted_shards else "")
    return (f"{check.checked} rows in {check.shards} shard(s){trusted}; revision {check.model_revision}, "
            f"dim {check.dim}")


def _clock(hours: float) -> str:
    """``h:mm:ss``, readable for a demo of seconds and a corpus of thousands of hours alike."""
    minutes, seconds = divmod(round(hours * 3600), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def _examples(group: ReasonGroup) -> str:
    return "<br>".join(example.detail for example in group.examples)


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in rows),
    ]
