"""What each stage plans to do, asked of a hand-built data root."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from flows.plan import chunks, plan_acquire, plan_embed, plan_preprocess, plan_verify, spread
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow
from store.shards import ShardAttributes, ShardWriter
from store.status import FailureClass, StatusRecord, write_status

DATASET = "demo"
SPACE = "musictext-dsp-1"


def rows(n: int) -> list[ManifestRow]:
    return [ManifestRow(item_id=make_item_id(DATASET, f"i{i}"), dataset=DATASET, source=f"i{i}.wav") for i in range(n)]


def record(root: DataRoot, stage: str, records: list[StatusRecord]) -> None:
    write_status(root.status_dir(stage, DATASET), "unit-test", records, "test")


def clip(root: DataRoot, row: ManifestRow) -> Path:
    path = root.clip_path(DATASET, row.item_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"clip")
    return path


@pytest.fixture()
def root(tmp_path: Path) -> DataRoot:
    return DataRoot(tmp_path)


def test_chunks() -> None:
    assert chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert chunks([], 3) == []


@pytest.mark.parametrize(("items", "unit_size", "workers", "sizes"), [
    (112, 100, 2, [56, 56]),            # not 100 items on one worker while the other idles
    (250, 100, 2, [63, 63, 63, 61]),    # two rounds of two, rather than a last unit of 50 alone
    (10_000, 100, 2, [100] * 100),      # enough units already: unit_size as asked
    (3, 100, 4, [1, 1, 1]),
    (7, 4, 1, [4, 3]),
    (0, 100, 2, []),
])
def test_spread_gives_every_worker_a_share(items: int, unit_size: int, workers: int, sizes: list[int]) -> None:
    units = spread(list(range(items)), unit_size, workers)
    assert [len(u) for u in units] == sizes
    assert [i for u in units for i in u] == list(range(items))


def test_acquire_redoes_ok_items_whose_audio_vanished(root: DataRoot) -> None:
    class Source:
        name = DATASET

        @staticmethod
        def audio_path(row: ManifestRow, data_root: DataRoot) -> Path:
            return data_root.raw_dir(DATASET) / row.source

    items = rows(3)
    root.raw_dir(DATASET).mkdir(parents=True)
    (root.raw_dir(DATASET) / "i0.wav").write_bytes(b"x")
    record(root, "acquire", [StatusRecord.ok(r.item_id, "acquire") for r in items[:2]])
    plan = plan_acquire(items, root, Source(), force=False)
    assert (plan.done, [r.item_id for r in plan.todo]) == (1, ["demo:i1", "demo:i2"])


def test_preprocess_adopts_clips_of_killed_runs_and_skips_permanent_failures(root: DataRoot) -> None:
    items = rows(5)
    record(root, "acquire", [StatusRecord.ok(r.item_id, "acquire") for r in items[:4]])
    record(root, "preprocess", [
        StatusRecord.ok(items[0].item_id, "preprocess"),
        StatusRecord.failed(items[1].item_id, "preprocess", "undecodable", "bad"),
        StatusRecord.failed(items[2].item_id, "preprocess", "io_error", "nfs", failure_class=FailureClass.TRANSIENT),
    ])
    clip(root, items[0])
    clip(root, items[3])  # written by a run that was killed before it recorded the unit
    plan = plan_preprocess(items, root, DATASET, force=False)
    assert plan.done == 1 and plan.skipped == 1
    assert [r.item_id for r in plan.todo] == ["demo:i2"]
    assert [r.item_id for r in plan.adopt] == ["demo:i3"]
    assert plan.total == 4  # item 4 was never acquired
    forced = plan_preprocess(items, root, DATASET, force=True)
    assert [r.item_id for r in forced.todo] == ["demo:i1", "demo:i2"]


def test_embed_plans_clips_without_a_vector(root: DataRoot) -> None:
    items = rows(3)
    record(root, "preprocess", [StatusRecord.ok(r.item_id, "preprocess") for r in items])
    for row in items:
        clip(root, row)
    attrs = ShardAttributes("dsp", "1", 2, "e", 22050, 0.1, 0.02, "0", space=SPACE)
    with ShardWriter(root.shard_dir("dsp", DATASET, SPACE), attrs) as writer:
        writer.append([items[0].item_id], np.array([[1.0, 0.0]], np.float32))
    write_status(root.embed_status_dir("dsp", DATASET, SPACE), "unit-x",
                 [StatusRecord.failed(items[1].item_id, "embed", "zero_embedding", "flat")], "test")
    plan = plan_embed(items, root, DATASET, "dsp", SPACE, force=False)
    assert (plan.done, plan.skipped, [r.item_id for r in plan.todo]) == (1, 1, ["demo:i2"])
    assert [r.item_id for r in plan_embed(items, root, DATASET, "mert", "navidrome-2025.11", force=False).todo] == [
        r.item_id for r in items]


def test_embed_counts_only_vectors_and_records_of_the_current_space(root: DataRoot) -> None:
    items = rows(2)
    record(root, "preprocess", [StatusRecord.ok(r.item_id, "preprocess") for r in items])
    for row in items:
        clip(root, row)
    old = ShardAttributes("dsp", "1", 2, "e", 22050, 0.1, 0.02, "0")  # the layout before spaces: no space level
    with ShardWriter(root.path / "embeddings" / "dsp" / DATASET, old) as writer:
        writer.append([items[0].item_id], np.array([[1.0, 0.0]], np.float32))
    with ShardWriter(root.shard_dir("dsp", DATASET, "musictext-dsp-0"), old) as writer:  # an older space
        writer.append([items[0].item_id], np.array([[1.0, 0.0]], np.float32))
    write_status(root.embed_status_dir("dsp", DATASET, "musictext-dsp-0"), "unit-x",
                 [StatusRecord.failed(items[1].item_id, "embed", "zero_embedding", "flat")], "test")
    plan = plan_embed(items, root, DATASET, "dsp", SPACE, force=False)
    assert (plan.done, plan.skipped, [r.item_id for r in plan.todo]) == (0, 0, ["demo:i0", "demo:i1"])


def test_verify_rechecks_changed_clips(root: DataRoot) -> None:
    items = rows(2)
    record(root, "preprocess", [StatusRecord.ok(r.item_id, "preprocess") for r in items])
    paths = [clip(root, r) for r in items]
    write_status(root.status_dir("verify", DATASET), "unit-v", [StatusRecord.ok(r.item_id, "verify") for r in items],
                 "test")
    assert plan_verify(items, root, DATASET).todo == []
    later = paths[1].stat().st_mtime + 3600
    os.utime(paths[1], (later, later))
    assert [r.item_id for r in plan_verify(items, root, DATASET).todo] == ["demo:i1"]
