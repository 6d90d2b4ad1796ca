"""Shards sized for their data: chunks that fit the rows a shard holds, float16 storage, and verify reading each
shard's vectors once."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
from measure_float16_storage import enriched_tracks, stored_cosines
from typer.testing import CliRunner

import verification.shards
from flows.cli import app
from flows.work import embed_unit
from store.layout import DataRoot
from store.settings import load_settings
from store.shards import CHUNK_BYTES, ShardAttributes, ShardWriter, open_shard, shard_paths
from verification.report import Checks, render_markdown, shard_record_path
from verification.shards import check_shards

SPACE = "musictext-dsp-1"
ATTRS = ShardAttributes(model="dsp", model_revision="1", dim=312, enrichment="e", sample_rate=22_050,
                        window_s=0.09, hop_s=0.02, musictext_version="0.1.0", space=SPACE)
MERT_DIM = 76_800


def unit_rows(count: int, dim: int = ATTRS.dim, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ids(count: int, first: int = 0) -> list[str]:
    return [f"demo:{n}" for n in range(first, first + count)]


def write(directory: Path, rows: np.ndarray, *, first: int = 0, batch: int = 1024, **options: object) -> Path:
    attrs = ShardAttributes(**{**asdict(ATTRS), "dim": rows.shape[1]})
    with ShardWriter(directory, attrs, **options) as writer:
        for start in range(0, len(rows), batch):
            writer.append(ids(len(rows[start:start + batch]), first + start), rows[start:start + batch])
    assert writer.path is not None
    return writer.path


def chunk_rows(path: Path) -> dict[str, int]:
    with h5py.File(path) as handle:
        return {name: handle[name].chunks[0] for name in ("item_id", "embedding", "frames")}


# Chunks


def test_a_shard_of_100_rows_is_chunked_by_at_most_100_rows_and_is_about_its_data_in_size(tmp_path: Path) -> None:
    path = write(tmp_path, unit_rows(100))
    assert chunk_rows(path) == {"item_id": 100, "embedding": 100, "frames": 100}  # the writer's limit is 1,024
    data = 100 * ATTRS.dim * 4 + 100 * 4 + sum(len(item_id) for item_id in ids(100))
    assert data < path.stat().st_size < data + 24_000  # HDF5's metadata; with 1,024-row chunks it was 10x the data


def test_rows_that_come_in_several_appends_short_of_a_chunk_make_one_chunk_of_exactly_them(tmp_path: Path) -> None:
    path = write(tmp_path, unit_rows(37), batch=10)
    assert chunk_rows(path) == {"item_id": 37, "embedding": 37, "frames": 37}
    np.testing.assert_array_equal(open_shard(path).embeddings(), unit_rows(37))


def test_wide_vectors_get_chunks_of_a_few_rows_within_the_chunk_cache(tmp_path: Path) -> None:
    rows = unit_rows(20, MERT_DIM)
    for dtype, expected in (("float32", 3), ("float16", 6)):
        path = write(tmp_path / dtype, rows, dtype=dtype)
        with h5py.File(path) as handle:
            embedding = handle["embedding"]
            assert embedding.chunks == (expected, MERT_DIM)
            assert expected * MERT_DIM * embedding.dtype.itemsize <= CHUNK_BYTES
        assert open_shard(path).item_ids == ids(20)
        np.testing.assert_allclose(open_shard(path).embeddings(), rows, atol=1e-3)


def test_a_shard_larger_than_a_chunk_keeps_full_chunks_and_every_row(tmp_path: Path) -> None:
    rows = unit_rows(2000)
    path = write(tmp_path, rows, batch=300)
    assert chunk_rows(path)["embedding"] == CHUNK_BYTES // (ATTRS.dim * 4) == 840
    shard = open_shard(path)
    assert shard.item_ids == ids(2000)
    np.testing.assert_array_equal(shard.embeddings(), rows)
    np.testing.assert_array_equal(shard.frames(), [-1] * 2000)


# float16


def test_float16_storage_is_recorded_halves_the_vectors_and_reads_back_as_float32(tmp_path: Path) -> None:
    rows = unit_rows(50, 1536)
    wide, narrow = write(tmp_path / "32", rows), write(tmp_path / "16", rows, dtype="float16")
    shard = open_shard(narrow)
    assert (shard.attrs["storage"], open_shard(wide).attrs["storage"]) == ("float16", "float32")
    with h5py.File(narrow) as handle:
        assert handle["embedding"].dtype == np.float16
    assert shard.embeddings().dtype == np.float32
    assert narrow.stat().st_size < 0.55 * wide.stat().st_size
    assert check_shards(tmp_path / "16", manifest_ids=set(ids(50))).problems == []  # unit norm within 1e-3


def test_an_unknown_storage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float32 or float16, not int8"):
        ShardWriter(tmp_path, ATTRS, dtype="int8")


@pytest.mark.parametrize(("frame_dim", "tracks"), [(25_600, 10), (512, 50)])
def test_float16_vectors_keep_a_cosine_above_0_9999_to_float32(tmp_path: Path, frame_dim: int, tracks: int) -> None:
    """MERT- and MuQ-sized enriched vectors (tests/measure_float16_storage.py measures more of them)."""
    cosines = stored_cosines(np.stack(list(enriched_tracks(frame_dim, tracks, seed=1))), tmp_path)
    assert cosines.min() >= 0.9999  # the bound the settings and README promise
    assert cosines.min() >= 1 - 1.2e-7  # the arithmetic bound of float16 rounding


def test_the_embed_stage_stores_float16_when_the_setting_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import soundfile as sf

    monkeypatch.setenv("MUSICTEXT_CONFIG", os.devnull)
    root = DataRoot(tmp_path / "data")
    rate = 44_100
    for n in range(3):
        clip = root.clip_path("demo", f"demo:{n}")
        clip.parent.mkdir(parents=True, exist_ok=True)
        tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * n) * np.arange(2 * rate) / rate)
        sf.write(clip, tone.astype(np.float32), rate, subtype="PCM_16", format="FLAC")
    settings = load_settings(root=root.path, embed_storage="float16")

    result = embed_unit("demo", "dsp", ids(3), root, settings)

    shard = open_shard(root.path / result.shard)
    assert result.ok == 3 and shard.attrs["storage"] == "float16" and shard.item_ids == ids(3)
    assert chunk_rows(shard.path) == {"item_id": 3, "embedding": 3, "frames": 3}


def test_an_unknown_storage_option_is_one_usage_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["embed", "x", "--storage", "fp8", "--root", str(tmp_path / "data")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if "storage" in line]
    assert "Invalid value for --storage: must be one of float32, float16" in line
    assert not (tmp_path / "data").exists()


# verify reads each shard's vectors once


@pytest.fixture
def read_rows(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(shard name, rows) of every block of vectors verify reads."""
    reads: list[tuple[str, int]] = []
    blocks = verification.shards._row_blocks

    def counted(embedding: h5py.Dataset, rows: int):
        for start, block in blocks(embedding, rows):
            reads.append((Path(embedding.file.filename).name, len(block)))
            yield start, block

    monkeypatch.setattr(verification.shards, "_row_blocks", counted)
    return reads


def verified_twice(directory: Path, record: Path, reads: list[tuple[str, int]], manifest: set[str]) -> list:
    first = check_shards(directory, manifest_ids=manifest, record=record)
    read_first = list(reads)
    reads.clear()
    return [first, read_first, check_shards(directory, manifest_ids=manifest, record=record)]


def test_a_second_verify_reads_no_vector_of_an_unchanged_shard(tmp_path: Path, read_rows: list) -> None:
    directory, record = tmp_path / "embeddings" / SPACE / "dsp" / "demo", tmp_path / "record.json"
    write(directory, unit_rows(30), first=0)
    write(directory, unit_rows(20, seed=1), first=30)

    first, read_first, second = verified_twice(directory, record, read_rows, set(ids(50)))

    assert sorted({name for name, _ in read_first}) == ["shard-00000.h5", "shard-00001.h5"]
    assert sum(rows for _, rows in read_first) == 50 and (first.trusted_shards, first.trusted_rows) == (0, 0)
    assert read_rows == []  # not one vector read the second time
    assert (second.shards, second.rows, second.trusted_shards, second.trusted_rows) == (2, 50, 2, 50)
    assert second.problems == [] and second.item_ids == set(ids(50))
    assert sorted(json.loads(record.read_text())["shards"]) == ["shard-00000.h5", "shard-00001.h5"]


def test_a_new_shard_is_read_and_the_old_ones_trusted(tmp_path: Path, read_rows: list) -> None:
    directory, record = tmp_path / "shards", tmp_path / "record.json"
    write(directory, unit_rows(30))
    check_shards(directory, manifest_ids=set(ids(40)), record=record)
    read_rows.clear()
    write(directory, unit_rows(10, seed=1), first=30)

    check = check_shards(directory, manifest_ids=set(ids(40)), record=record)

    assert read_rows == [("shard-00001.h5", 10)]
    assert (check.trusted_shards, check.trusted_rows, check.rows) == (1, 30, 40)


def test_a_shard_changed_in_place_is_read_again_and_its_damage_found(tmp_path: Path, read_rows: list) -> None:
    directory, record = tmp_path / "shards", tmp_path / "record.json"
    path = write(directory, unit_rows(30))
    check_shards(directory, manifest_ids=set(ids(30)), record=record)
    read_rows.clear()
    with h5py.File(path, "r+") as handle:  # the same file, its bytes changed: size and inode stay
        handle["embedding"][7, 0] = np.nan

    check = check_shards(directory, manifest_ids=set(ids(30)), record=record)

    assert sum(rows for _, rows in read_rows) == 30 and check.trusted_shards == 0
    assert [(p.item_id, p.reason) for p in check.problems] == [("demo:7", "non_finite")]
    assert json.loads(record.read_text())["shards"] == {}  # a shard with bad vectors is never trusted
    read_rows.clear()
    check_shards(directory, manifest_ids=set(ids(30)), record=record)
    assert sum(rows for _, rows in read_rows) == 30  # ... so every verify reports it again


def test_a_shard_replaced_under_its_name_is_read_again(tmp_path: Path, read_rows: list) -> None:
    directory, record = tmp_path / "shards", tmp_path / "record.json"
    path = write(directory, unit_rows(30))
    check_shards(directory, manifest_ids=set(ids(30)), record=record)
    read_rows.clear()
    replacement = write(tmp_path / "elsewhere", unit_rows(30, seed=2))
    stat = path.stat()
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime and size
    os.replace(replacement, path)

    check = check_shards(directory, manifest_ids=set(ids(30)), record=record)

    assert sum(rows for _, rows in read_rows) == 30 and check.trusted_shards == 0


def test_the_id_checks_still_run_on_a_trusted_shard(tmp_path: Path, read_rows: list) -> None:
    """The manifest may change between two runs: unknown ids are found without reading vectors."""
    directory, record = tmp_path / "shards", tmp_path / "record.json"
    write(directory, unit_rows(5))
    check_shards(directory, manifest_ids=set(ids(5)), record=record)
    read_rows.clear()
    check = check_shards(directory, manifest_ids=set(ids(4)), record=record)
    assert read_rows == [] and check.trusted_shards == 1
    assert [(p.item_id, p.reason) for p in check.problems] == [("demo:4", "unknown_id")]


@pytest.mark.parametrize("record_text", ["not json", '{"version": 1, "checks": "other rules", "shards": {}}',
                                         '{"version": 1}', "[]"])
def test_a_record_that_cannot_be_trusted_means_reading_everything(
    tmp_path: Path, read_rows: list, record_text: str
) -> None:
    directory, record = tmp_path / "shards", tmp_path / "record.json"
    write(directory, unit_rows(5))
    check_shards(directory, manifest_ids=set(ids(5)), record=record)
    stamps = json.loads(record.read_text())["shards"]
    if "other rules" in record_text:
        record_text = record_text.replace('{}', json.dumps(stamps))
    record.write_text(record_text)
    read_rows.clear()
    assert check_shards(directory, manifest_ids=set(ids(5)), record=record).trusted_shards == 0
    assert read_rows == [("shard-00000.h5", 5)]


def test_a_trusted_shard_found_damaged_is_still_set_aside(tmp_path: Path) -> None:
    directory = tmp_path / "embeddings" / SPACE / "dsp" / "demo"
    record = shard_record_path(DataRoot(tmp_path), "demo", (SPACE, "dsp"))
    write(directory, unit_rows(3))
    damaged = write(directory, unit_rows(2, seed=1), first=3)
    check_shards(directory, manifest_ids=set(ids(5)), record=record)
    size = damaged.stat().st_size
    damaged.write_bytes(b"\x00garbage" * (size // 8))

    check = check_shards(directory, manifest_ids=set(ids(5)), record=record)

    assert (check.shards, check.rows, check.trusted_shards, check.item_ids) == (1, 3, 1, set(ids(3)))
    assert [p.name for p in shard_paths(directory)] == ["shard-00000.h5"]
    assert list((tmp_path / "quarantine").rglob("shard-00001.h5.*"))
    assert sorted(json.loads(record.read_text())["shards"]) == ["shard-00000.h5"]


def test_the_report_says_how_much_was_trusted(tmp_path: Path) -> None:
    from verification.report import CheckSummary, DatasetReport

    summary = CheckSummary("shards", f"{SPACE}/dsp", 50, 0, [], shards=2, model_revision="1", dim=312,
                           trusted_shards=1, trusted_rows=30)
    report = DatasetReport("demo", "now", "0", "ok", 0, 0.0, 0, [], [summary], [], {})
    assert ("| shards (musictext-dsp-1/dsp) | 50 rows in 2 shard(s) (30 rows in 1 unchanged shard(s) trusted from "
            "an earlier verify); revision 1, dim 312 | 0 |") in render_markdown(report)
    assert Checks().shards == {}


@pytest.mark.integration
def test_the_verify_command_reads_each_shard_once_and_reports_what_it_trusted(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from store.manifest import ManifestRow, write_manifest

    monkeypatch.setenv("MUSICTEXT_CONFIG", os.devnull)
    root = DataRoot(tmp_path / "data")
    write_manifest(root.manifest("synthetic"), [ManifestRow(item_id, "synthetic", "src") for item_id in
                                                 [f"synthetic:{n}" for n in range(5)]])
    attrs = ShardAttributes(**{**asdict(ATTRS), "model_revision": "librosa-1"})
    directory = root.shard_dir("dsp", "synthetic", SPACE)
    for first, count in ((0, 3), (3, 2)):
        with ShardWriter(directory, attrs) as writer:
            writer.append([f"synthetic:{n}" for n in range(first, first + count)], unit_rows(count, seed=first))

    def verified() -> dict:
        CliRunner().invoke(app, ["verify", "synthetic", "--model", "dsp", "--root", str(root.path)])
        report = json.loads((root.reports_dir() / "synthetic" / "verification.json").read_text())
        [shards] = [check for check in report["checks"] if check["name"] == "shards"]
        return shards

    first, second = verified(), verified()
    assert (first["checked"], first["trusted_shards"], first["trusted_rows"]) == (5, 0, 0)
    assert (second["checked"], second["trusted_shards"], second["trusted_rows"]) == (5, 2, 5)
    assert shard_record_path(root, "synthetic", (SPACE, "dsp")).is_file()
    assert "(5 rows in 2 unchanged shard(s) trusted from an earlier verify)" in (
        root.reports_dir() / "synthetic" / "verification.md").read_text()
