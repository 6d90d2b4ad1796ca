"""The data root's building blocks: settings, atomic writes, manifests, status records, shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from store.atomic import atomic_path, sweep_stale_temps, temp_path_for, write_text_atomic
from store.layout import DataRoot, item_key, make_item_id
from store.manifest import ManifestRow, merge_rows, read_manifest, write_manifest
from store.settings import load_settings
from store.shards import ShardAttributes, ShardWriter, embedded_ids, open_shard, shard_paths
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
    return ManifestRow(item_id=make_item_id("d", native), dataset="d", source=f"src/{native}", **fields)


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
    old = [_row("a"), _row("b")]
    update = merge_rows(old, [_row("b", split="train"), _row("c")])
    assert [r.item_id for r in update.rows] == ["d:a", "d:b", "d:c"]
    assert (update.added, update.changed) == (1, 1)
    assert not merge_rows(old, old).dirty


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
