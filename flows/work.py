"""The work of one unit of items for each stage, as plain functions.

No Prefect here: the flows in ``flows/stages.py`` decide what runs where; these say what one unit does,
so they run the same under any task runner (threads, processes, Dask) and are tested directly. Each
returns the unit's status records after writing them, and never raises for one bad item.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from downloaders import get_source
from downloaders.base import SourceContext
from embedders.base import Embedder
from embedders.runtime import embed_clips, shard_attributes
from flows.devices import loaded_embedder, unit_device
from processors.clip import segment_length, write_clip
from processors.decode import probe_duration
from processors.errors import AudioError
from store import __version__
from store.layout import DataRoot
from store.manifest import ManifestRow
from store.settings import Settings
from store.shard_stream import write_results
from store.shards import Embedded, ShardWriter
from store.status import FailureClass, StatusRecord, unit_name, write_status
from verification.audio import DURATION_TOLERANCE_S, check_clip


@dataclass(frozen=True)
class UnitResult:
    stage: str
    records: list[StatusRecord]
    shard: str | None = None

    @property
    def ok(self) -> int:
        return sum(r.is_ok for r in self.records)

    @property
    def failed(self) -> int:
        return len(self.records) - self.ok


def unexpected(item_id: str, stage: str, error: Exception) -> StatusRecord:
    """A bug or environment fault, not bad data: transient, so the next run retries it once fixed."""
    return StatusRecord.failed(
        item_id, stage, "unexpected_error", f"{type(error).__name__}: {error}",
        failure_class=FailureClass.TRANSIENT,
    )


def _record(directory: Path, stage: str, records: list[StatusRecord]) -> UnitResult:
    write_status(directory, unit_name(r.item_id for r in records), records, __version__)
    return UnitResult(stage, records)


def relative(root: DataRoot, path: Path) -> str:
    return os.path.relpath(path, root.path)


def acquire_unit(rows: Sequence[ManifestRow], ctx: SourceContext) -> UnitResult:
    dataset = rows[0].dataset
    source = get_source(dataset)
    records: list[StatusRecord] = []
    try:
        records.extend(source.acquire(rows, ctx))
    except Exception as error:  # a source bug must not lose the records of the rows it already did
        done = {r.item_id for r in records}
        records.extend(unexpected(row.item_id, "acquire", error) for row in rows if row.item_id not in done)
    return _record(ctx.root.status_dir("acquire", dataset), "acquire", records)


def preprocess_unit(rows: Sequence[ManifestRow], root: DataRoot, settings: Settings) -> UnitResult:
    dataset = rows[0].dataset
    source = get_source(dataset)
    records = []
    for row in rows:
        target = root.clip_path(dataset, row.item_id)
        try:
            start_s, end_s = source.clip_range(row)
            segment = segment_length(row, (start_s, end_s), DURATION_TOLERANCE_S)
            info = write_clip(source.audio_path(row, root), target, start_s=start_s, end_s=end_s, settings=settings,
                              segment=segment)
            records.append(
                StatusRecord.ok(row.item_id, "preprocess", output=relative(root, target), duration_s=info.duration_s)
            )
        except AudioError as error:
            records.append(error.record(row.item_id, "preprocess"))
        except Exception as error:
            records.append(unexpected(row.item_id, "preprocess", error))
    return _record(root.status_dir("preprocess", dataset), "preprocess", records)


def adopt_clips(rows: Sequence[ManifestRow], root: DataRoot) -> UnitResult:
    """Record clips that have no record (finished by an interrupted run, or whose record was damaged and set
    aside) instead of redoing them: clips are written atomically, so one that exists is whole."""
    records = []
    for row in rows:
        target = root.clip_path(row.dataset, row.item_id)
        try:
            duration = probe_duration(target)
        except Exception as error:
            records.append(unexpected(row.item_id, "preprocess", error))
            continue
        records.append(StatusRecord.ok(row.item_id, "preprocess", output=relative(root, target), duration_s=duration,
                                       detail="clip kept from an interrupted run or a lost record"))
    return _record(root.status_dir("preprocess", rows[0].dataset), "preprocess", records)


def embed_unit(dataset: str, model: str, item_ids: Sequence[str], root: DataRoot, settings: Settings, *,
               weights: str | None = None, device: str | None = None) -> UnitResult:
    """Embed one unit into one new shard of the model's space, published only when complete."""
    embedder = loaded_embedder(model, weights, unit_device(device), settings.embed_precision)
    space = embedder.spec.space
    clips = [(item_id, root.clip_path(dataset, item_id)) for item_id in item_ids]
    with ShardWriter(root.shard_dir(model, dataset, space), shard_attributes(embedder),
                     dtype=settings.embed_storage, chunk_rows=settings.shard_rows) as writer:
        done, failures = write_results(_embedded(embedder, clips, settings), writer, chunk_rows=settings.shard_rows)
    shard = relative(root, writer.path) if writer.path else None
    records = [StatusRecord.ok(item_id, "embed", output=shard) for item_id in done] + failures
    write_status(root.embed_status_dir(model, dataset, space), unit_name(item_ids), records, __version__)
    return UnitResult("embed", records, shard)


def _embedded(
    embedder: Embedder, clips: list[tuple[str, Path]], settings: Settings
) -> Iterator[tuple[str, Embedded | StatusRecord]]:
    """The batched torch runtime for models that run on a device, the clip-by-clip CPU runtime otherwise."""
    if not embedder.spec.device:
        return embed_clips(embedder, clips)
    from embedders.torch_runtime import TorchRuntime

    return TorchRuntime(embedder, num_workers=settings.embed_workers).embed(clips)


def verify_unit(rows: Sequence[ManifestRow], root: DataRoot, settings: Settings) -> UnitResult:
    records = []
    for row in rows:
        expected = row.end_s - row.start_s if row.start_s is not None and row.end_s is not None else None
        try:
            problems = check_clip(
                row.item_id, root.clip_path(row.dataset, row.item_id), sample_rate=settings.sample_rate,
                min_s=settings.min_clip_s, silence_dbfs=settings.silence_dbfs, expected_s=expected,
            )
        except Exception as error:
            records.append(unexpected(row.item_id, "verify", error))
            continue
        if problems:
            details = "; ".join(p.detail for p in problems)
            records.append(StatusRecord.failed(row.item_id, "verify", problems[0].reason, details))
        else:
            records.append(StatusRecord.ok(row.item_id, "verify"))
    return _record(root.status_dir("verify", rows[0].dataset), "verify", records)
