"""Evaluation on a benchmark dataset (``evaluate --on``): every caption ranks every item's vector, items rank all
captions, on the full set and the validated captions, beside the untrained head and the seed baselines; and no
run is scored on recordings it learnt from, however the recording reached its training split."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from corpus import DATASETS, MODEL, SPACE, build_corpus
from sdd_corpus import (
    NO_VECTOR,
    SDD,
    SDD_TRACKS,
    TWINS,
    TWINS_DATASET,
    captions_of,
    sdd_group,
    sdd_tracks,
    write_sdd,
    write_twins,
)

from store.errors import InvalidInputError
from store.layout import DataRoot
from store.manifest import ManifestRow, read_manifest, write_manifest
from training.benchmark import VALID_SUBSET, load_benchmark
from training.config import TrainConfig
from training.evaluate_on import check_benchmark, evaluate_on
from training.metrics import retrieval_metrics, retrieval_ranks
from training.train_groups import record_train_groups, train_groups_path, trained_among
from training.trainer import train

pytestmark = pytest.mark.integration

TRAINED_ON = (*DATASETS, TWINS_DATASET)


def _config(run_id: str) -> TrainConfig:
    return TrainConfig(model=MODEL, space=SPACE, datasets=TRAINED_ON, run_id=run_id, head="pooled",
                       freeze_encoder=True, batch_size=16, lr=3e-3, warmup_steps=3, max_steps=30, eval_every=10,
                       checkpoint_every=10, patience=None, max_length=32, device="cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    """``early`` trained before the benchmark was catalogued (its twins in train), ``late`` after."""
    corpus = build_corpus(tmp_path_factory.mktemp("benchmark"), tracks=12)
    write_twins(corpus.root)
    train(_config("early"), corpus.root, show_progress=False)
    write_sdd(corpus.root)
    train(_config("late"), corpus.root, show_progress=False)
    return corpus.root


def _brute_force(text: np.ndarray, audio: np.ndarray, owners: np.ndarray) -> tuple[list[int], list[int]]:
    scores = (text / np.linalg.norm(text, axis=1, keepdims=True)) @ (audio / np.linalg.norm(audio, axis=1,
                                                                                           keepdims=True)).T
    t2m = [1 + int(np.sum(np.delete(row, owner) >= row[owner])) for row, owner in zip(scores, owners, strict=True)]
    m2t = []
    for item in range(len(audio)):
        column, right = scores[:, item], owners == item
        best = column[right].max()
        m2t.append(1 + int(np.sum(column[~right] >= best)))
    return t2m, m2t


def test_several_captions_per_item_rank_as_brute_force_does_in_any_block_size() -> None:
    rng = np.random.default_rng(3)
    audio = rng.normal(size=(9, 6))
    audio[4] = audio[2]  # a tie between two items counts against the right one
    owners = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 8])
    text = audio[owners] + rng.normal(scale=1.2, size=(len(owners), 6))
    expected = _brute_force(text, audio, owners)
    for chunk_rows in (1, 2, 5, 64):
        t2m, m2t = retrieval_ranks(text, audio, owners=owners, chunk_rows=chunk_rows)
        assert (t2m.tolist(), m2t.tolist()) == expected, chunk_rows
    metrics = retrieval_metrics(text, audio, owners=owners)
    assert (metrics["candidates"], metrics["m2t_candidates"], metrics["chance_R@1"]) == (9, 13, 1 / 9)


def test_owners_must_name_one_item_per_text_and_every_item_must_have_a_text() -> None:
    audio, text = np.eye(3), np.eye(3)
    with pytest.raises(ValueError, match="item row 2 has no text"):
        retrieval_ranks(text, audio, owners=np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="one item per text"):
        retrieval_ranks(text, audio, owners=np.array([0, 1]))


def test_a_run_records_its_train_groups_and_a_resumed_session_adds_its_own(tmp_path: Path) -> None:
    odd = "local:/music/a\nb.flac"  # a group may hold any character
    record_train_groups(tmp_path, ["b", odd, "a", "b"], resumed=False)
    assert trained_among(tmp_path, {odd, "b", "z"}) == {odd, "b"}
    record_train_groups(tmp_path, ["c", "a"], resumed=True)
    lines = train_groups_path(tmp_path).read_text().splitlines()
    assert [json.loads(line) for line in lines] == sorted({"a", "b", "c", odd})
    fresh = tmp_path / "started-before-records"
    fresh.mkdir()
    record_train_groups(fresh, ["a"], resumed=True)  # what its earlier sessions saw stays unknown
    assert trained_among(fresh, {"a"}) is None


def test_training_after_the_benchmark_is_catalogued_keeps_its_twins_out(root: DataRoot) -> None:
    twins = {sdd_group(1000 + i) for i in range(TWINS)}
    assert trained_among(root.run_dir("early"), twins) == twins
    assert trained_among(root.run_dir("late"), twins) == set()
    assert trained_among(root.run_dir("late"), {"twins:2000", sdd_group(2000)}) == {sdd_group(2000)}


def test_every_caption_ranks_every_item_beside_the_untrained_head_and_the_baselines(root: DataRoot) -> None:
    evaluation = evaluate_on(root, ["late"], SDD, tag_families={})
    with_vector = SDD_TRACKS - 1  # NO_VECTOR
    captions = sum(len(captions_of(i, track)[0]) for i, track in enumerate(sdd_tracks()[:SDD_TRACKS])
                   if f"{SDD}:{1000 + i}" != NO_VECTOR)
    results = evaluation.results
    assert list(results) == ["late (pooled)", "untrained pooled (baseline)", "prototype (baseline)",
                             "linear (baseline)"]
    for metrics in results.values():
        assert (metrics["candidates"], metrics["m2t_candidates"]) == (with_vector, captions)
        assert {"t2m_R@1", "t2m_R@5", "t2m_R@10", "t2m_MRR", "t2m_median_rank", "m2t_MRR"} <= set(metrics)
    assert results["late (pooled)"]["t2m_MRR"] > results["untrained pooled (baseline)"]["t2m_MRR"]

    [(name, validated)] = evaluation.subsets.items()
    flagged = [i for i in range(SDD_TRACKS) if i % 3 != 2 and f"{SDD}:{1000 + i}" != NO_VECTOR]
    assert name == VALID_SUBSET
    assert {(m["candidates"], m["m2t_candidates"]) for m in validated.values()} == {(len(flagged), len(flagged))}

    report = json.loads(evaluation.json_path.read_text())
    assert report["meta"]["vectors"] == f"{MODEL} vectors of space {SPACE}, one per item of {SDD}"
    assert report["meta"]["skipped"] == {"no_vector": 1, "no_caption": 0}
    markdown = evaluation.markdown_path.read_text()
    assert "## Retrieval, validated captions" in markdown
    assert f"| late (pooled) | {with_vector} | {captions} |" in markdown
    assert evaluation.markdown_path.parent == root.evaluation_dir(SDD)


def test_a_run_that_trained_on_a_benchmark_twin_is_refused(root: DataRoot) -> None:
    with pytest.raises(InvalidInputError, match=rf"run early trained on {TWINS} of the {SDD_TRACKS} groups of sdd"):
        check_benchmark(root, ["late", "early"], SDD)


def test_a_run_without_a_record_or_started_from_a_leaking_run_is_refused(root: DataRoot) -> None:
    for copy in ("unrecorded", "child"):
        shutil.copytree(root.run_dir("late"), root.run_dir(copy))
    train_groups_path(root.run_dir("unrecorded")).unlink()
    with pytest.raises(InvalidInputError, match="run unrecorded has no record of the groups it trained on"):
        check_benchmark(root, ["unrecorded"], SDD)
    config = json.loads((root.run_dir("child") / "config.json").read_text())
    (root.run_dir("child") / "config.json").write_text(json.dumps({**config, "init_from": "early"}))
    with pytest.raises(InvalidInputError, match="run child trained on 3 .* which it started from"):
        check_benchmark(root, ["child"], SDD)


def test_validity_flags_that_do_not_match_the_captions_are_an_error(root: DataRoot, tmp_path: Path) -> None:
    copy = DataRoot(tmp_path / "copy")
    shutil.copytree(root.path / "embeddings", copy.path / "embeddings")
    rows = read_manifest(root.manifest(SDD))
    first = rows[0]
    broken = dataclasses.replace(first, extra=ManifestRow.encode_extra({"is_valid_subset": [True] * 9}))
    write_manifest(copy.manifest(SDD), [broken, *rows[1:]])
    with pytest.raises(InvalidInputError, match=f"{first.item_id}: is_valid_subset must hold one true/false per"):
        load_benchmark(copy, SDD, MODEL, SPACE)
