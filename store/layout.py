"""Where each output lives under the data root (see ARCHITECTURE.md, "The data root")."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from store.errors import DataRootError
from store.names import check_name

STAGES = ("catalog", "acquire", "preprocess", "embed", "verify")
_MAX_NAME = 200


def make_item_id(dataset: str, native_id: str, start_s: float | None = None) -> str:
    """``<dataset>:<native id>[@<start>]``: stable across runs, so outputs can be matched to rows."""
    suffix = "" if start_s is None else "@" + f"{start_s:.3f}".rstrip("0").rstrip(".")
    return f"{dataset}:{native_id}{suffix}"


def item_key(item_id: str) -> str:
    """A file-name-safe, collision-free key for an item id (the part after ``<dataset>:``).

    Percent-encoding keeps it reversible and readable; over-long keys keep a readable prefix plus a hash.
    """
    native = item_id.split(":", 1)[1] if ":" in item_id else item_id
    key = quote(native, safe="@.-_=+,")
    if key.startswith("."):
        key = "%2E" + key[1:]
    if len(key) > _MAX_NAME:
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        key = f"{key[:_MAX_NAME - 17]}~{digest}"
    return key


def clip_name(item_id: str) -> str:
    """The file name of an item's clip: planners and reports match it against one listing of the clip folder,
    without building a path per item."""
    return f"{item_key(item_id)}.flac"


@dataclass(frozen=True)
class DataRoot:
    path: Path

    def __post_init__(self) -> None:
        path = Path(self.path).resolve()
        if path.exists() and not path.is_dir():
            raise DataRootError(f"the data root {path} is a file, not a folder: point --root (or MUSICTEXT_ROOT, "
                                "or root in musictext.toml) at a folder, new or existing")
        object.__setattr__(self, "path", path)

    def manifest(self, dataset: str) -> Path:
        return self.path / "manifests" / f"{check_name(dataset, 'dataset')}.parquet"

    def raw_dir(self, dataset: str) -> Path:
        return self.path / "raw" / check_name(dataset, "dataset")

    def clip_dir(self, dataset: str) -> Path:
        return self.path / "clips" / check_name(dataset, "dataset")

    def clip_path(self, dataset: str, item_id: str) -> Path:
        return self.clip_dir(dataset) / clip_name(item_id)

    def clip_names(self, dataset: str) -> set[str]:
        """The file names in the clip folder of ``dataset``: one listing instead of a ``stat`` per item."""
        directory = self.clip_dir(dataset)
        return {entry.name for entry in os.scandir(directory)} if directory.is_dir() else set()

    def status_dir(self, stage: str, dataset: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        return self.path / "status" / stage / check_name(dataset, "dataset")

    def embed_status_dir(self, model: str, dataset: str, space: str) -> Path:
        """Embed records are kept per space and model: one item can succeed with one model and fail with another,
        and an item embedded in an old space is still to do in a new one."""
        return self.status_dir("embed", dataset) / check_name(space, "space") / check_name(model, "model")

    def shard_dir(self, model: str, dataset: str, space: str) -> Path:
        """``embeddings/<space>/<model>/<dataset>``: vectors of one space never share a directory with another's
        (rule 3, append-only: a new space is a new directory, the old one stays as it was)."""
        names = (check_name(space, "space"), check_name(model, "model"), check_name(dataset, "dataset"))
        return self.path.joinpath("embeddings", *names)

    def embedded(self, dataset: str) -> list[tuple[str, str]]:
        """``(space, model)`` pairs with shards or embed records for ``dataset``, in order."""
        check_name(dataset, "dataset")
        with_shards = {(d.parent.parent.name, d.parent.name) for d in self._shard_dirs(f"*/*/{dataset}")}
        records = self.status_dir("embed", dataset)
        recorded = {(d.parent.name, d.name) for d in records.glob("*/*") if d.is_dir()} if records.is_dir() else set()
        return sorted(with_shards | recorded)

    def legacy_shard_dirs(self, dataset: str | None = None) -> list[Path]:
        """``embeddings/<model>/<dataset>`` directories of shards written before spaces existed (the layout had
        no space level), for ``dataset`` or every dataset."""
        return self._shard_dirs(f"*/{check_name(dataset, 'dataset') if dataset else '*'}")

    def _shard_dirs(self, pattern: str) -> list[Path]:
        base = self.path / "embeddings"
        return sorted(d for d in base.glob(pattern) if d.is_dir() and any(d.glob("shard-*.h5")))

    def lock(self, stage: str, key: str) -> Path:
        """What one run of ``stage`` on ``key`` (a dataset) holds, so two such runs never overlap."""
        return self.path / "locks" / check_name(stage, "stage") / check_name(key, "dataset")

    def runs_dir(self) -> Path:
        return self.path / "runs"

    def run_dir(self, run_id: str) -> Path:
        """``runs/<run_id>``: a training run's checkpoints, metrics and plots."""
        return self.runs_dir() / check_name(run_id, "run id")

    def reports_dir(self) -> Path:
        return self.path / "reports"

    def quarantine_dir(self) -> Path:
        """``quarantine/``: damaged state files moved aside (``store/quarantine.py``), kept for inspection."""
        return self.path / "quarantine"

    def evaluation_dir(self, name: str) -> Path:
        """``reports/evaluation/<name>``: one evaluation report and its plots."""
        return self.reports_dir() / "evaluation" / check_name(name, "report name")

    def datasets(self) -> list[str]:
        """Datasets that have a manifest, in name order."""
        return sorted(p.stem for p in (self.path / "manifests").glob("*.parquet"))
