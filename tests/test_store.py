"""The data root's building blocks: settings, atomic writes, manifests, status records, shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import manifest
from store.atomic import atomic_path, sweep_stale_temps, temp_path_for, write_text_atomic
from store.layout import DataRoot, item_key, make_item_id
from store.manifest import (
    SCHEMA,
    ManifestRow,
    canonical_row,
    merge_rows,
    read_manifest,
    rows_to_table,
    table_to_rows,
    write_manifest,
)
from store.quarantine import DamagedFileError, is_damage, quarantined, set_aside
from store.settings import load_settings
from store.shard_ids import cache_path, embedded_ids
from store.shards import ShardAttributes, ShardWriter, iter_shards, open_shard, shard_paths
from store.status import FailureClass, StatusRecord, read_status, write_status

SPACE = "musictext-dsp-1"
ATTRS = ShardAttributes(model="dsp", model_revision="r1", dim=4, enrichment="e", sample_rate=22050,
                        window_s=0.09, hop_s=0.02, musictext_version="0.1.0", space=SPACE)


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "musictext.toml"
    config.write_text('root = "/from/toml"\nunit_size = 7\nworkers = 3\n')
    monkeypatch.setenv("MUSICTEXT_CONFIG", str(config))
    monkeypatch.setenv("MUSICTEXT_UNIT_SIZE", "11")
    settings = load_settings()
    assert settings.root == Path("/from/toml")  # TOML over the default
    assert settings.unit_size == 11  # environment over TOML
    assert load_settings(workers=5, root=None).workers == 5  # explicit over everything; None means "not given"


def test_settings_reject_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICTEXT_UNIT_SIZE", "0")
    with pytest.raises(ValueError, match="unit_size"):
        load_settings()


def test_item_ids_and_keys() -> None:
    assert make_item_id("fma", "000002") == "fma:000002"
    assert make_item_id("jamendo", "t1", 30.0) == "jamendo:t1@30"
    keys = {item_key(i) for i in ["local:a/b.wav", "local:a_b.wav", "local:../x.wav", "local:.hidden"]}
    assert len(keys) == 4
    assert all("/" not in k and not k.startswith(".") for k in keys)
    long_key = item_key("local:" + "x" * 500)
    assert len(long_key) <= 200 and long_key != item_key("local:" + "x" * 499)


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_without_overwrite_refuses_existing(tmp_path: Path) -> None:
    target = tmp_path / "shard.h5"
    target.write_text("first")
    with pytest.raises(FileExistsError), atomic_path(target, overwrite=False) as temp:
        temp.write_text("second")
    assert target.read_text() == "first"


def test_sweep_removes_only_temps_of_dead_processes(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "sub" / f".clip.flac.{dead.stdout.strip()}.0123abcd.tmp"
    stale.parent.mkdir()
    stale.write_text("partial")
    live = temp_path_for(tmp_path / "clip2.flac")
    live.write_text("being written")
    keep = tmp_path / ".config.tmp"
    keep.write_text("not ours")
    assert sweep_stale_temps(tmp_path) == [stale]
    assert live.exists() and keep.exists()


def _row(native: str, **fields: object) -> ManifestRow:
    return ManifestRow(**{"item_id": make_item_id("d", native), "dataset": "d", "source": f"src/{native}",
                          "group": make_item_id("d", native), **fields})


def test_manifest_round_trip(tmp_path: Path) -> None:
    rows = [_row("a", captions=("a calm piano",), tags=("piano", "calm"), start_s=0.0, end_s=10.0,
                 extra=ManifestRow.encode_extra({"bpm": 80})),
            _row("b", split="test")]
    path = tmp_path / "manifests" / "d.parquet"
    write_manifest(path, rows)
    assert read_manifest(path) == rows
    assert read_manifest(tmp_path / "missing.parquet") == []
    assert rows[0].extra_fields == {"bpm": 80}


def test_merge_keeps_old_rows_and_counts_changes() -> None:
    old = rows_to_table([_row("a"), _row("b"), _row("e")])
    update = merge_rows(old, [_row("b", split="train"), _row("c"), _row("e", split="val"), _row("e")])
    assert table_to_rows(update.table) == [_row("a"), _row("b", split="train"), _row("e"), _row("c")]
    assert (update.added, update.changed) == (1, 1), "a row changed and changed back again is unchanged"
    assert not merge_rows(old, table_to_rows(old)).dirty


def test_merge_streams_a_large_catalog_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "MERGE_BATCH", 3)
    old = rows_to_table([_row(str(i)) for i in range(10)])
    incoming = (_row(str(i), split="test" if i % 4 == 0 else None) for i in range(5, 17))
    update = merge_rows(old, incoming)
    merged = table_to_rows(update.table)
    assert [r.item_id for r in merged] == [f"d:{i}" for i in range(17)]
    assert (update.added, update.changed) == (7, 1)
    assert [r.item_id for r in merged if r.split == "test"] == ["d:8", "d:12", "d:16"]


def test_status_latest_record_wins(tmp_path: Path) -> None:
    directory = tmp_path / "status"
    write_status(directory, "unit-1", [
        StatusRecord.failed("d:a", "preprocess", "undecodable", "bad", failure_class=FailureClass.PERMANENT),
        StatusRecord.failed("d:b", "preprocess", "timeout", "slow", failure_class=FailureClass.TRANSIENT),
        StatusRecord.failed("d:c", "preprocess", "timeout", "slow", failure_class=FailureClass.TRANSIENT),
    ], "test")
    write_status(directory, "unit-2", [StatusRecord.ok("d:c", "preprocess", duration_s=3.0)], "test")
    seen = read_status(directory)
    assert seen["d:c"].is_ok and seen["d:c"].code_version == "test"
    assert seen["d:a"].is_permanent_failure and not seen["d:b"].is_permanent_failure
    assert seen["d:b"].failure_class == "transient" and seen["d:b"].reason == "timeout"


def test_shard_writer_publishes_complete_shards_in_order(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with ShardWriter(tmp_path, ATTRS, chunk_rows=2) as writer:
        writer.append(["d:a", "d:b"], vectors[:2], [3, 1])
        writer.append(["d:c", "d:d", "d:e"], vectors[2:])
    with ShardWriter(tmp_path, ATTRS) as second:
        second.append(["d:f"], vectors[:1])
    assert [p.name for p in shard_paths(tmp_path)] == ["shard-00000.h5", "shard-00001.h5"]
    shard = open_shard(writer.path)
    assert shard.item_ids == ["d:a", "d:b", "d:c", "d:d", "d:e"]
    np.testing.assert_array_equal(shard.embeddings(), vectors)
    assert shard.attrs["model"] == "dsp" and shard.attrs["dim"] == 4 and shard.attrs["created_at"]
    assert shard.space == SPACE and shard.attrs["space"] == SPACE
    np.testing.assert_array_equal(shard.frames(), [3, 1, -1, -1, -1])  # -1: frame count not given
    with h5py.File(writer.path) as handle:
        assert handle["embedding"].chunks == (2, 4)
        assert handle["frames"].dtype == np.int32
    assert embedded_ids(tmp_path) == {"d:a", "d:b", "d:c", "d:d", "d:e", "d:f"}


def test_shard_writer_discards_on_error_and_when_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError), ShardWriter(tmp_path, ATTRS) as writer:
        writer.append(["d:a"], np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="frame counts"), ShardWriter(tmp_path, ATTRS) as writer:
        writer.append(["d:a", "d:b"], np.zeros((2, 4), np.float32), [1])
    with ShardWriter(tmp_path, ATTRS):
        pass
    assert list(tmp_path.iterdir()) == []


def test_shard_claim_skips_names_taken_meanwhile(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, ATTRS)
    writer.append(["d:a"], np.ones((1, 4), np.float32))
    (tmp_path / "shard-00000.h5").write_bytes(b"claimed by another worker")
    assert writer.close().name == "shard-00001.h5"
    assert (tmp_path / "shard-00000.h5").read_bytes() == b"claimed by another worker"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_data_root_paths(tmp_path: Path) -> None:
    root = DataRoot(tmp_path)
    assert root.clip_path("local", "local:dir/a.wav@30") == tmp_path / "clips/local/dir%2Fa.wav@30.flac"
    with pytest.raises(ValueError, match="unknown stage"):
        root.status_dir("train", "x")
    assert os.fspath(root.shard_dir("dsp", "x", SPACE)).endswith(f"embeddings/{SPACE}/dsp/x")
    assert root.embed_status_dir("dsp", "x", SPACE) == tmp_path / "status/embed/x" / SPACE / "dsp"


def test_a_shard_written_before_spaces_has_no_space_and_unknown_frames(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    with h5py.File(path, "w") as handle:  # what the code before spaces wrote: no space attribute, no frames
        handle.create_dataset("item_id", data=["d:a", "d:b"], dtype=h5py.string_dtype())
        handle.create_dataset("embedding", data=np.eye(2, 4, dtype=np.float32))
        handle.attrs["model"] = "dsp"
    shard = open_shard(path)
    assert shard.space == ""
    np.testing.assert_array_equal(shard.frames(), [-1, -1])


def test_embedded_lists_space_and_model_pairs_and_legacy_dirs_the_layout_before_spaces(tmp_path: Path) -> None:
    root = DataRoot(tmp_path)
    for directory in (root.shard_dir("dsp", "x", SPACE), root.shard_dir("mert", "x", "navidrome-2025.11"),
                      root.shard_dir("dsp", "y", SPACE)):
        with ShardWriter(directory, ATTRS) as writer:
            writer.append(["x:a"], np.ones((1, 4), np.float32))
    write_status(root.embed_status_dir("muq", "x", "navidrome-2025.11"), "unit-1",
                 [StatusRecord.failed("x:a", "embed", "too_short_clip", "short")], "test")
    root.shard_dir("music2latent", "x", "navidrome-2025.11").mkdir(parents=True)  # empty: not embedded
    legacy = tmp_path / "embeddings" / "dsp" / "x"
    with ShardWriter(legacy, ATTRS) as writer:
        writer.append(["x:a"], np.ones((1, 4), np.float32))
    assert root.embedded("x") == [("musictext-dsp-1", "dsp"), ("navidrome-2025.11", "mert"),
                                  ("navidrome-2025.11", "muq")]
    assert root.embedded("z") == []
    assert root.legacy_shard_dirs("x") == [legacy]
    assert root.legacy_shard_dirs() == [legacy]
    assert root.legacy_shard_dirs("y") == []


def _truncate(path: Path, keep: int = 200) -> bytes:
    """Cut ``path`` short, as a full disk or an interrupted copy would; returns the bytes left."""
    data = path.read_bytes()[:keep]
    path.write_bytes(data)
    return data


def _moved(root: DataRoot, original: Path) -> list[Path]:
    """What the quarantine holds for ``original``: the file itself and its note."""
    folder = root.quarantine_dir() / original.parent.relative_to(root.path)
    return sorted(folder.glob(f"{original.name}.*")) if folder.is_dir() else []


def test_a_damaged_status_file_is_set_aside_and_the_others_still_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = DataRoot(tmp_path)
    directory = root.status_dir("preprocess", "d")
    kept = write_status(directory, "unit-1", [StatusRecord.ok("d:a", "preprocess")], "test")
    damaged = write_status(directory, "unit-2", [StatusRecord.ok("d:b", "preprocess")], "test")
    left = _truncate(damaged)

    assert set(read_status(directory)) == {"d:a"}
    assert kept.exists() and not damaged.exists()
    moved, note = _moved(root, damaged)
    assert moved.read_bytes() == left and note.name == moved.name + ".json"
    fields = json.loads(note.read_text())
    assert fields["original"] == f"status/preprocess/d/{damaged.name}" and fields["dataset"] == "d"
    assert fields["moved_to"] == str(moved.relative_to(tmp_path))
    assert "Parquet magic bytes not found" in fields["problem"]
    assert fields["next_step"] == "the next preprocess of d plans its items again"
    assert quarantined(root, "d") == [quarantined(root)[0]] and quarantined(root, "other") == []
    lines = [r.getMessage() for r in caplog.records if r.name == "store.quarantine"]
    assert lines == [f"damaged status/preprocess/d/{damaged.name} ({fields['problem']}): moved to "
                     f"{fields['moved_to']}; the next preprocess of d plans its items again"]
    assert read_status(directory).keys() == {"d:a"}  # said once: the file is gone, the next read is quiet
    assert len([r for r in caplog.records if r.name == "store.quarantine"]) == 1


def test_status_text_that_is_not_utf8_is_damage_found_while_reading(tmp_path: Path) -> None:
    root = DataRoot(tmp_path)
    directory = root.embed_status_dir("dsp", "d", SPACE)
    text = pa.array(["d:a"])
    broken = pa.Array.from_buffers(pa.string(), 1, [None, text.buffers()[1], pa.py_buffer(b"\xff\xfe\x00")])
    pq.write_table(pa.table({"item_id": broken, "stage": ["embed"], "outcome": ["ok"],
                             "finished_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC"))}),
                   directory.mkdir(parents=True) or directory / "unit-1-x.parquet")
    assert read_status(directory) == {}
    assert [m.next_step for m in quarantined(root)] == ["the next embed of d with dsp plans its items again"]


def test_a_damaged_manifest_reads_as_not_catalogued_and_is_set_aside(tmp_path: Path) -> None:
    root = DataRoot(tmp_path)
    write_manifest(root.manifest("d"), [_row("a")])
    _truncate(root.manifest("d"))
    assert read_manifest(root.manifest("d")) == []
    assert not root.manifest("d").exists() and len(_moved(root, root.manifest("d"))) == 2
    assert "`musictext ingest d`" in quarantined(root, "d")[0].next_step
    write_manifest(root.manifest("d"), [_row("a")])  # what the next catalog does
    assert read_manifest(root.manifest("d")) == [_row("a")]


def test_a_damaged_shard_is_passed_over_and_opening_it_says_where_it_went(tmp_path: Path) -> None:
    root = DataRoot(tmp_path)
    directory = root.shard_dir("dsp", "d", SPACE)
    paths = []
    for name in ("a", "b", "c"):
        with ShardWriter(directory, ATTRS) as writer:
            writer.append([f"d:{name}"], np.ones((1, 4), np.float32))
        paths.append(writer.path)
    _truncate(paths[1], keep=5000)
    assert embedded_ids(directory) == {"d:a", "d:c"}
    assert shard_paths(directory) == [paths[0], paths[2]]
    assert quarantined(root, "d")[0].next_step == "the next embed of d with dsp embeds its rows again"
    _truncate(paths[2], keep=100)
    with pytest.raises(DamagedFileError, match=r"moved to quarantine/embeddings/.*shard-00002\.h5\.") as raised:
        open_shard(paths[2])
    assert raised.value.moved and [s.item_ids for s in iter_shards(directory)] == [["d:a"]]


def test_damage_outside_a_data_root_is_left_in_place_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "exported.parquet"
    write_manifest(path, [_row("a")])
    left = _truncate(path)
    with pytest.raises(DamagedFileError, match="not under a data root, so it was left in place") as raised:
        read_manifest(path)
    assert not raised.value.moved and path.read_bytes() == left
    assert not (tmp_path / "quarantine").exists()


def test_only_undecodable_bytes_are_damage_never_a_file_that_cannot_be_reached(tmp_path: Path) -> None:
    assert is_damage(OSError("Unable to synchronously open file (truncated file: eof = 5000)"))
    assert is_damage(pa.ArrowInvalid("Parquet magic bytes not found in footer"))
    for unreachable in (PermissionError(13, "Permission denied"), FileNotFoundError(2, "gone"),
                        OSError(5, "Input/output error"), MemoryError()):
        assert not is_damage(unreachable)
    status = DataRoot(tmp_path).status_dir("verify", "d")
    status.mkdir(parents=True)
    (status / "unit-1-x.parquet").symlink_to(tmp_path / "unmounted.parquet")  # unreachable, not damaged
    with pytest.raises(FileNotFoundError):
        read_status(status)
    assert (status / "unit-1-x.parquet").is_symlink() and not (tmp_path / "quarantine").exists()


def test_a_file_another_run_set_aside_first_is_not_moved_twice(tmp_path: Path) -> None:
    root = DataRoot(tmp_path)
    path = write_status(root.status_dir("acquire", "d"), "unit-1", [StatusRecord.ok("d:a", "acquire")], "test")
    _truncate(path)
    first = set_aside(path, OSError("damaged"))
    assert first is not None and set_aside(path, OSError("damaged")) is None
    assert len(quarantined(root)) == 1


# --- the group and held-out contract -------------------------------------------------------------------------


def test_a_manifest_written_before_group_and_held_out_were_columns_reads_with_both_filled(tmp_path: Path) -> None:
    """Older manifests kept them in ``extra``: read back, their rows group and hold out as the catalog would."""
    legacy = pa.schema([field for field in SCHEMA if field.name not in ("group", "held_out")])
    records = [
        {"item_id": "musicbench:a", "dataset": "musicbench", "source": "a.wav", "split": "train",
         "extra": ManifestRow.encode_extra({"group": "x", "ytid": "vid1", "is_audioset_eval_mcaps": True})},
        {"item_id": "musiccaps:vid2@30", "dataset": "musiccaps", "source": "vid2", "split": "test",
         "extra": ManifestRow.encode_extra({"group": "vid2", "segment_downloaded": True})},
        {"item_id": "fma:2@0", "dataset": "fma", "source": "f.mp3", "split": "validation",
         "extra": ManifestRow.encode_extra({"group": "2"})},
        {"item_id": "local:song.flac@30", "dataset": "local", "source": "song.flac", "split": None, "extra": "{}"},
    ]
    pq.write_table(pa.Table.from_pylist(records, schema=legacy), tmp_path / "old.parquet")
    rows = read_manifest(tmp_path / "old.parquet")
    assert [(row.group, row.held_out, row.split) for row in rows] == [
        ("youtube:vid1", True, "train"), ("youtube:vid2", True, "test"), ("fma:2", False, "val"),
        ("local:song.flac", False, None)]


def test_the_catalog_form_of_a_row_names_its_split_canonically_and_holds_out_test() -> None:
    row = ManifestRow("d:a@0", "d", "a.mp3", split="eval_mcaps", group="d:a")
    assert (canonical_row(row).split, canonical_row(row).held_out) == ("test", True)
    assert canonical_row(replace(row, split="Validation")).held_out is False
    with pytest.raises(ValueError, match="the d source left its group empty"):
        canonical_row(replace(row, group=None))
    with pytest.raises(ValueError, match=r"d:a@0: split 'holdout' is not one musictext knows"):
        canonical_row(replace(row, split="holdout"))


def test_embedded_ids_come_from_a_cache_that_follows_the_shards(tmp_path: Path) -> None:
    directory = DataRoot(tmp_path).shard_dir("dsp", "d", "s")
    for ids in (["d:a", "d:b"], ["d:c"]):
        with ShardWriter(directory, replace(ATTRS, space="s")) as writer:
            writer.append(ids, np.ones((len(ids), 4), dtype=np.float32))
    cache = cache_path(directory)
    assert embedded_ids(directory) == {"d:a", "d:b", "d:c"} and cache is not None and cache.exists()
    first = shard_paths(directory)[0]
    with h5py.File(first, "r+") as handle:  # a shard changed under the cache: its ids are read again
        handle["item_id"][0] = b"d:z"
    assert embedded_ids(directory) == {"d:z", "d:b", "d:c"}
    shard_paths(directory)[1].unlink()
    assert embedded_ids(directory) == {"d:z", "d:b"}
    cache.write_bytes(b"not parquet")
    assert embedded_ids(directory) == {"d:z", "d:b"}, "a damaged cache is rebuilt from the shards"
    assert pq.ParquetFile(cache).read().num_rows == 2


def test_a_manifest_streams_in_batches_and_a_damaged_one_is_set_aside(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "ROWS_PER_BATCH", 3)
    monkeypatch.setattr(manifest, "ROW_GROUP", 4)
    path = DataRoot(tmp_path).manifest("d")
    rows = [_row(str(i), captions=(f"caption {i}",)) for i in range(10)]
    write_manifest(path, rows)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    assert list(manifest.iter_manifest(path)) == rows and manifest.count_manifest(path) == 10
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert manifest.count_manifest(path) == 0 and not path.exists()
    assert list((tmp_path / "quarantine" / "manifests").glob("d.parquet.*"))
