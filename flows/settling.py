"""Which files each stage's planning reads, so that a run can skip a stage that has nothing new (:mod:`store.settled`).

No Prefect here: the CLI asks these before it starts any flow, and the flows record them when a stage is done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.summary import StageSummary
from store.layout import DataRoot
from store.manifest import ManifestRow
from store.settings import Settings
from store.settled import digest, forget, record, settled, stamp_path, states
from store.status import StatusRecord

if TYPE_CHECKING:
    from training.config import TrainConfig

VERIFY_SETTINGS = ("sample_rate", "min_clip_s", "silence_dbfs")
"""The settings that verify's checks use: a change re-checks every clip."""
STAGES_BEFORE_VERIFY = ("catalog", "acquire", "preprocess")


@dataclass
class Settling:
    """One stage's stamp: where it lives, the digest of the stage's inputs, the files others write that its planning
    reads (their states are taken before it plans) and those it writes itself under its lock (taken after).
    ``whole``: the folders among them of few files (status records, shards, reports), watched with every file in
    them; clip and audio folders, a file per item, are watched as folders."""

    root: Path
    path: Path
    inputs: str
    read: list[Path]
    own: list[Path] = field(default_factory=list)
    whole: frozenset[Path] = frozenset()

    def settled(self) -> StageSummary | None:
        """The stage's counts as a summary of a run that worked nothing, when nothing it reads has changed."""
        found = self.found()
        if found is None:
            return None
        note = f"nothing new since {found['at']}"
        return StageSummary(found["dataset"], found["stage"], found["items"], found["done"], 0, 0, 0,
                            found["skipped"], {}, "; ".join(part for part in (found["extra"], note) if part),
                            found["verdict"])

    def found(self) -> dict[str, Any] | None:
        """What the settled run kept (:meth:`keep`), when nothing it read has changed since; else ``None``."""
        return settled(self.root, self.path, self.inputs)

    def keep(self, before: dict[str, Any], kept: dict[str, Any], own: Sequence[Path] = ()) -> None:
        """Stamp the run as settled, keeping ``kept`` (JSON) for the runs that will skip it."""
        record(self.path, self.inputs, {**before, **self._states([*self.own, *own])}, kept)

    def before(self) -> dict[str, Any]:
        """The states of what others write, taken before planning."""
        return self._states(self.read)

    def settle(self, before: dict[str, Any], summary: StageSummary, records: Iterable[StatusRecord],
               own: Sequence[Path] = (), note: str = "") -> None:
        """Record the stage as settled after its run, unless an item is left for the next run to retry (a
        transient failure). Settled, every item is done but those skipped for a permanent failure. ``own`` adds
        output folders known only once the rows were read; ``note`` is what the skipping runs repeat (verify's
        verdict and report)."""
        records = list(records)
        if any(not r.is_ok and not r.is_permanent_failure for r in records):
            forget(self.path)
            return
        skipped = summary.skipped_permanent + sum(r.is_permanent_failure for r in records)
        counts = {"dataset": summary.dataset, "stage": summary.stage, "items": summary.items,
                  "done": summary.items - skipped, "skipped": skipped, "extra": note, "verdict": summary.verdict,
                  "at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"}
        self.keep(before, counts, own)

    def _states(self, paths: Sequence[Path]) -> dict[str, Any]:
        return states(self.root, [p for p in paths if p not in self.whole], [p for p in paths if p in self.whole])


def _settling(root: DataRoot, stage: str, dataset: str, inputs: dict[str, Any], read: list[Path], own: list[Path],
              whole: Iterable[Path], key: str = "all") -> Settling:
    return Settling(root.path, stamp_path(root, stage, dataset, key),
                    digest({"stage": stage, "dataset": dataset, **inputs}), read, own, frozenset(whole))


def catalog_settling(root: DataRoot, dataset: str, rows: Iterable[ManifestRow]) -> Settling:
    """The catalog is settled when the source lists exactly the rows it listed when the manifest was last merged,
    and neither the manifest nor the rejected rows' records changed since: then merging them again would change
    nothing, and this is known without reading the manifest (the source's listing is what it costs)."""
    listed = hashlib.sha256()
    for row in rows:
        listed.update(repr(row).encode())
    records = root.status_dir("catalog", dataset)
    return _settling(root, "catalog", dataset, {"rows": listed.hexdigest()}, [], [root.manifest(dataset), records],
                     [records])


def acquire_settling(root: DataRoot, dataset: str, options: dict[str, Any]) -> Settling:
    """acquire plans from the manifest and its records, and asks whether each audio file exists: the folders of
    the audio files are added when the run has read the rows (:meth:`Settling.settle`'s ``own``)."""
    records = root.status_dir("acquire", dataset)
    return _settling(root, "acquire", dataset, {"options": options}, [root.manifest(dataset)], [records], [records])


def preprocess_settling(root: DataRoot, dataset: str) -> Settling:
    acquired, records = root.status_dir("acquire", dataset), root.status_dir("preprocess", dataset)
    return _settling(root, "preprocess", dataset, {}, [root.manifest(dataset), acquired],
                     [records, root.clip_dir(dataset)], [acquired, records])


def embed_settling(root: DataRoot, dataset: str, model: str, space: str) -> Settling:
    clipped = root.status_dir("preprocess", dataset)
    own = [root.shard_dir(model, dataset, space), root.embed_status_dir(model, dataset, space)]
    return _settling(root, "embed", dataset, {"model": model, "space": space},
                     [root.manifest(dataset), clipped, root.clip_dir(dataset)], own, [clipped, *own],
                     f"{space}/{model}")


def verify_settling(root: DataRoot, dataset: str, models: list[str] | None, settings: Settings) -> Settling:
    """verify reads nearly everything of a dataset: its report counts every stage, and it checks every model's
    shards, so the folders of every stage's records and of every embedding space are watched."""
    embeddings = root.path / "embeddings"
    embed_records = root.status_dir("embed", dataset)
    folders = [embeddings, embed_records, *(root.status_dir(stage, dataset) for stage in STAGES_BEFORE_VERIFY),
               *embeddings.glob("*"), *embeddings.glob("*/*"), *embeddings.glob(f"*/*/{dataset}"),
               *embed_records.glob("*"), *embed_records.glob("*/*")]
    own = [root.status_dir("verify", dataset), root.reports_dir() / dataset]
    chosen = sorted(models) if models is not None else None
    inputs = {"models": chosen, "settings": {name: getattr(settings, name) for name in VERIFY_SETTINGS}}
    return _settling(root, "verify", dataset, inputs, [root.manifest(dataset), root.clip_dir(dataset), *folders],
                     own, [*folders, *own], ",".join(chosen) if chosen is not None else "*")


def evaluation_settling(root: DataRoot, name: str, runs: Sequence[str], configs: Sequence[TrainConfig],
                        device: str, on: str | None) -> Settling:
    """An evaluation reads its runs (configuration, finished state, best checkpoint, train groups), the manifests and
    shards of their datasets (and of the benchmark ``on``) and writes ``reports/evaluation/<name>/``: the same runs
    on the same data give the same report, so it need not be computed again."""
    datasets = sorted({*(d for config in configs for d in config.datasets), *([on] if on else [])})
    model, space = configs[0].model, configs[0].space
    run_dirs = [root.run_dir(run) for run in runs]
    folders = [*run_dirs, *(d / "checkpoints" for d in run_dirs), *(d / "checkpoints" / "best" for d in run_dirs),
               *(root.shard_dir(model, dataset, space) for dataset in datasets)]
    own = [root.evaluation_dir(name)]
    return _settling(root, "evaluate", name, {"runs": list(runs), "device": device, "on": on},
                     [*(root.manifest(dataset) for dataset in datasets), *folders], own, [*folders, *own],
                     ",".join(runs))
