"""Which files each stage's planning reads, so that a run can skip a stage that has nothing new (:mod:`store.settled`).

No Prefect here: the CLI asks these before it starts any flow, and the flows record them when a stage is done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.summary import StageSummary
from store.layout import DataRoot
from store.manifest import ManifestRow
from store.settings import Settings
from store.settled import digest, forget, record, settled, stamp_path, states
from store.status import StatusRecord

VERIFY_SETTINGS = ("sample_rate", "min_clip_s", "silence_dbfs")
"""The settings that verify's checks use: a change re-checks every clip."""


@dataclass
class Settling:
    """One stage's stamp: where it lives, the digest of the stage's inputs, the files others write that its planning
    reads (their states are taken before it plans) and those it writes itself under its lock (taken after)."""

    path: Path
    inputs: str
    read: list[Path]
    own: list[Path] = field(default_factory=list)

    def settled(self) -> StageSummary | None:
        """The stage's counts as a summary of a run that worked nothing, when nothing it reads has changed."""
        found = settled(self.path, self.inputs)
        if found is None:
            return None
        note = f"nothing new since {found['at']}"
        return StageSummary(found["dataset"], found["stage"], found["items"], found["done"], 0, 0, 0,
                            found["skipped"], {}, "; ".join(part for part in (found["extra"], note) if part),
                            found["verdict"])

    def before(self) -> dict[str, Any]:
        """The states of what others write, taken before planning."""
        return states(self.read)

    def settle(self, before: dict[str, Any], summary: StageSummary, records: Iterable[StatusRecord],
               own: Sequence[Path] = ()) -> None:
        """Record the stage as settled after its run, unless an item is left for the next run to retry (a
        transient failure); ``own`` adds output folders known only once the rows were read."""
        records = list(records)
        if any(not r.is_ok and not r.is_permanent_failure for r in records):
            forget(self.path)
            return
        failed_for_good = sum(r.is_permanent_failure for r in records)
        done = summary.items if summary.stage == "catalog" else summary.done_before + summary.ok
        counts = {"dataset": summary.dataset, "stage": summary.stage, "items": summary.items, "done": done,
                  "skipped": summary.skipped_permanent + failed_for_good,
                  "extra": summary.extra if summary.stage == "verify" else "", "verdict": summary.verdict,
                  "at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"}
        record(self.path, self.inputs, {**before, **states([*self.own, *own])}, counts)


def catalog_settling(root: DataRoot, dataset: str, rows: Iterable[ManifestRow]) -> Settling:
    """The catalog is settled when the source lists exactly the rows it listed when the manifest was last merged,
    and neither the manifest nor the rejected rows' records changed since: then merging them again would change
    nothing, and this is known without reading the manifest (the source's listing is what it costs)."""
    listed = hashlib.sha256()
    for row in rows:
        listed.update(repr(row).encode())
    return Settling(stamp_path(root, "catalog", dataset), digest({"stage": "catalog", "dataset": dataset,
                                                                   "rows": listed.hexdigest()}),
                    [], [root.manifest(dataset), root.status_dir("catalog", dataset)])


def acquire_settling(root: DataRoot, dataset: str, options: dict[str, Any]) -> Settling:
    """acquire plans from the manifest and its records, and asks whether each audio file exists: the folders of
    the audio files are added when the run has read the rows (:meth:`Settling.settle`'s ``own``)."""
    return Settling(stamp_path(root, "acquire", dataset), digest({"stage": "acquire", "dataset": dataset,
                                                                   "options": options}),
                    [root.manifest(dataset)], [root.status_dir("acquire", dataset)])


def preprocess_settling(root: DataRoot, dataset: str) -> Settling:
    return Settling(stamp_path(root, "preprocess", dataset), digest({"stage": "preprocess", "dataset": dataset}),
                    [root.manifest(dataset), root.status_dir("acquire", dataset)],
                    [root.status_dir("preprocess", dataset), root.clip_dir(dataset)])


def embed_settling(root: DataRoot, dataset: str, model: str, space: str) -> Settling:
    return Settling(stamp_path(root, "embed", dataset, f"{space}/{model}"),
                    digest({"stage": "embed", "dataset": dataset, "model": model, "space": space}),
                    [root.manifest(dataset), root.status_dir("preprocess", dataset), root.clip_dir(dataset)],
                    [root.shard_dir(model, dataset, space), root.embed_status_dir(model, dataset, space)])


def verify_settling(root: DataRoot, dataset: str, models: list[str] | None, settings: Settings) -> Settling:
    """verify reads nearly everything of a dataset: its report counts every stage, and it checks every model's
    shards, so the folders of every stage's records and of every embedding space are watched."""
    embeddings = root.path / "embeddings"
    embed_records = root.status_dir("embed", dataset)
    watched = [root.manifest(dataset), root.clip_dir(dataset), embeddings, embed_records,
               *(root.status_dir(stage, dataset) for stage in ("catalog", "acquire", "preprocess")),
               *embeddings.glob("*"), *embeddings.glob("*/*"), *embeddings.glob(f"*/*/{dataset}"),
               *embed_records.glob("*"), *embed_records.glob("*/*")]
    chosen = sorted(models) if models is not None else None
    inputs = {"stage": "verify", "dataset": dataset, "models": chosen,
              "settings": {name: getattr(settings, name) for name in VERIFY_SETTINGS}}
    return Settling(stamp_path(root, "verify", dataset, ",".join(chosen) if chosen is not None else "*"),
                    digest(inputs), watched, [root.status_dir("verify", dataset), root.reports_dir() / dataset])

