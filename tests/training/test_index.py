"""FAISS indexes beside real HDF5 shards: the same hits as exact search, kept in step with new shards, and
never used when they no longer match the shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedders import embedder_spec
from flows.cli import app
from store.layout import DataRoot
from store.shards import ShardAttributes, ShardWriter
from training.index import STATE_FILE, build_index, index_dir, read_state, usable_index
from training.search import search, search_collection

DIM = 24
MODEL = "dsp"
SPACE = embedder_spec(MODEL).space


def _shard(root: DataRoot, dataset: str, first: int, rows: int, seed: int, dim: int = DIM,
           space: str = SPACE) -> Path:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    attrs = ShardAttributes(MODEL, "1", dim, "none", 22050, 10.0, 10.0, "0", space=space)
    with ShardWriter(root.shard_dir(MODEL, dataset, space), attrs) as writer:
        writer.append([f"{dataset}:{i:05d}" for i in range(first, first + rows)], vectors)
    assert writer.path is not None
    return writer.path


@pytest.fixture()
def root(tmp_path: Path) -> DataRoot:
    data = DataRoot(tmp_path)
    _shard(data, "alpha", 0, 300, seed=1)
    _shard(data, "alpha", 300, 200, seed=2)
    _shard(data, "beta", 0, 250, seed=3)
    return data


def _dirs(root: DataRoot) -> list[Path]:
    return [root.shard_dir(MODEL, name, SPACE) for name in ("alpha", "beta")]


def _queries(count: int = 20) -> np.ndarray:
    return np.random.default_rng(99).normal(size=(count, DIM)).astype(np.float32)


def _same_hits(root: DataRoot, k: int = 10) -> None:
    for query in _queries():
        indexed = search_collection(query, _dirs(root), k, space=SPACE).hits
        exact = search(query, _dirs(root), k, space=SPACE)
        assert [(h.item_id, h.shard, h.row) for h in indexed] == [(h.item_id, h.shard, h.row) for h in exact]
        assert [h.score for h in indexed] == pytest.approx([h.score for h in exact], abs=1e-5)


def test_a_flat_index_finds_exactly_what_exact_search_finds(root: DataRoot) -> None:
    reports = [build_index(directory) for directory in _dirs(root)]
    assert [(r.kind, r.rows, r.added, r.rebuilt, r.recall_at_10) for r in reports] == [
        ("flat", 500, 500, True, None), ("flat", 250, 250, True, None)]
    _same_hits(root)
    assert search_collection(_queries()[0], _dirs(root), space=SPACE).methods == [
        "alpha: faiss flat (500 rows)", "beta: faiss flat (250 rows)"]


def test_new_shards_are_searched_exactly_until_added_then_only_they_are_added(root: DataRoot) -> None:
    build_index(root.shard_dir(MODEL, "alpha", SPACE))
    _shard(root, "alpha", 500, 120, seed=4)
    methods = search_collection(_queries()[0], _dirs(root), space=SPACE).methods
    assert methods == ["alpha: faiss flat (500 rows) + exact (1 newer shard)", "beta: exact (1 shard)"]
    _same_hits(root)
    report = build_index(root.shard_dir(MODEL, "alpha", SPACE))
    assert (report.rows, report.added, report.rebuilt) == (620, 120, False)
    assert search_collection(_queries()[0], _dirs(root), space=SPACE).methods[0] == "alpha: faiss flat (620 rows)"
    _same_hits(root)


def test_an_index_whose_shard_left_is_not_used_and_is_rebuilt(root: DataRoot, tmp_path: Path) -> None:
    alpha = root.shard_dir(MODEL, "alpha", SPACE)
    build_index(alpha)
    first = sorted(alpha.glob("shard-*.h5"))[0]
    shutil.move(first, tmp_path / "aside.h5")
    assert usable_index(alpha) is None
    assert search_collection(_queries()[0], [alpha], space=SPACE).methods == ["alpha: exact (1 shard)"]
    report = build_index(alpha)
    assert (report.rows, report.rebuilt) == (200, True)
    _same_hits(root)


def test_a_damaged_state_file_means_a_rebuild(root: DataRoot) -> None:
    alpha = root.shard_dir(MODEL, "alpha", SPACE)
    build_index(alpha)
    (index_dir(alpha) / STATE_FILE).write_text('{"kind": "flat", "dim": ')
    assert read_state(alpha) is None and usable_index(alpha) is None
    assert build_index(alpha).rebuilt


@pytest.mark.parametrize(("kind", "least"), [("hnsw", 0.9), ("ivf", 0.2)])
def test_approximate_kinds_report_their_recall_against_exact_search(tmp_path: Path, kind: str, least: float) -> None:
    root = DataRoot(tmp_path)
    _shard(root, "big", 0, 3000, seed=5)
    directory = root.shard_dir(MODEL, "big", SPACE)
    report = build_index(directory, kind=kind)
    assert report.rebuilt and least <= report.recall_at_10 <= 1.0
    state = read_state(directory)
    assert state.kind == kind and state.recall_at_10 == report.recall_at_10
    hits = search_collection(_queries()[0], [directory], space=SPACE)
    assert hits.methods == [f"big: faiss {kind} (3,000 rows)"] and len(hits.hits) == 10


def test_an_index_of_another_space_is_refused(root: DataRoot) -> None:
    alpha = root.shard_dir(MODEL, "alpha", SPACE)
    build_index(alpha)
    state = json.loads((index_dir(alpha) / STATE_FILE).read_text())
    (index_dir(alpha) / STATE_FILE).write_text(json.dumps({**state, "space": "navidrome-2025.11"}))
    with pytest.raises(ValueError, match="not musictext-dsp-1"):
        search_collection(_queries()[0], [alpha], space=SPACE)


def test_index_build_from_the_command_line(root: DataRoot) -> None:
    result = CliRunner().invoke(app, ["index", "build", "--model", MODEL, "--root", str(root.path), "--kind", "hnsw"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "beta" in result.output and "hnsw" in result.output
    assert read_state(root.shard_dir(MODEL, "beta", SPACE)).kind == "hnsw"
    again = CliRunner().invoke(app, ["index", "build", "--model", MODEL, "--root", str(root.path), "--kind", "hnsw"])
    assert "new shards added" in again.output
    for arguments, says in ((["--kind", "lsh"], "--kind 'lsh' is not one of"),
                            (["--model", "clap"], "unknown embedder 'clap'")):
        mistake = CliRunner().invoke(app, ["index", "build", "--root", str(root.path), "--model", MODEL, *arguments])
        assert mistake.exit_code == 2 and says in mistake.output and "Traceback" not in mistake.output
