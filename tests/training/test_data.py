"""Pairs and splits from a real corpus (Parquet manifests, HDF5 shards): no leakage, official splits kept,
evaluation sets held out, texts from captions or tags, vectors read back exactly, in workers too."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import DATASETS, DIM, MIXED_SPLIT_GROUP, MODEL, NO_TEXT, NO_VECTOR, SPACE, Corpus, build_corpus

from store.layout import DataRoot
from store.manifest import ManifestRow, canonical_row, write_manifest
from store.shards import ShardAttributes, ShardWriter, iter_shards, open_shard, shard_paths
from training.data import (
    EpochBatches,
    PairDataset,
    Splits,
    hashed_split,
    load_splits,
    official_split,
    pair_loader,
    tags_sentence,
    vector_locations,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def splits(corpus: Corpus) -> Splits:
    return load_splits(corpus.root, DATASETS, MODEL, SPACE, seed=3)


def _row(**fields: object) -> ManifestRow:
    return ManifestRow(**{"item_id": "d:x@0", "dataset": "d", "source": "x", **fields})


def _splits_of(splits: Splits) -> dict[str, str]:
    return {item.item_id: name for name in ("train", "val", "test") for item in splits[name]}


@pytest.mark.parametrize(("tags", "sentence"), [
    (("rock", "guitar", "energetic"), "A rock track with guitar, energetic."),
    (("electronic", "synth"), "An electronic track with synth."),
    (("jazz",), "A jazz track."),
])
def test_tags_become_one_short_sentence(tags: tuple[str, ...], sentence: str) -> None:
    assert tags_sentence(tags) == sentence


@pytest.mark.parametrize(("split", "expected"), [
    ("train", "train"), ("TRAINING", "train"), ("valid", "val"), ("validation", "val"), ("val", "val"),
    ("test", "test"), ("eval", "test"), ("test_a", "test"), ("eval_mcaps", "test"), (None, None),
])
def test_official_split_names_are_normalised(split: str | None, expected: str | None) -> None:
    assert official_split(_row(split=split)) == expected


def test_held_out_rows_are_test_whatever_their_split() -> None:
    assert official_split(_row(split="train", held_out=True)) == "test"


def test_an_unknown_split_name_is_refused_with_the_names_that_work() -> None:
    with pytest.raises(ValueError, match=r"d:x@0: split 'holdout' .* validation"):
        official_split(_row(split="holdout"))


def test_a_track_held_out_by_another_dataset_never_trains(corpus: Corpus, tmp_path: Path) -> None:
    """SDD's tracks are MTG-Jamendo test tracks: with SDD catalogued, an MTG-Jamendo clip of an SDD track (its
    twin, in one ``jamendo:`` group) is test even when MTG-Jamendo calls it train and SDD is not trained on."""
    root = DataRoot(tmp_path / "data")
    shutil.copytree(corpus.root.path, root.path)
    twin = next(row for row in corpus.rows["tagged"] if row.item_id not in NO_VECTOR and row.item_id != NO_TEXT)
    assert _splits_of(load_splits(root, ["tagged"], MODEL, SPACE, fractions=(1, 0, 0)))[twin.item_id] == "train"
    write_manifest(root.manifest("song_describer"), [canonical_row(ManifestRow(
        "song_describer:1004034", "song_describer", "34/1004034.2min.mp3", split="test", captions=("a song",),
        group=twin.group))])
    assigned = _splits_of(load_splits(root, ["tagged"], MODEL, SPACE, fractions=(1, 0, 0)))
    twins = [row.item_id for row in corpus.rows["tagged"] if row.group == twin.group and row.item_id in assigned]
    assert twins and all(assigned[item_id] == "test" for item_id in twins)
    assert {name for item_id, name in assigned.items() if item_id not in twins} == {"train"}


def test_hashed_splits_follow_the_fractions_and_the_seed() -> None:
    groups = [f"g{i}" for i in range(20000)]
    counts = Counter(hashed_split(group, (0.7, 0.2, 0.1), 0) for group in groups)
    assert counts["train"] / 20000 == pytest.approx(0.7, abs=0.015)
    assert counts["val"] / 20000 == pytest.approx(0.2, abs=0.015)
    assert counts["test"] / 20000 == pytest.approx(0.1, abs=0.015)
    reseeded = [hashed_split(group, (0.7, 0.2, 0.1), 1) for group in groups[:200]]
    assert reseeded != [hashed_split(group, (0.7, 0.2, 0.1), 0) for group in groups[:200]]


def test_no_group_is_in_two_splits(splits: Splits) -> None:
    owners: dict[str, set[str]] = {}
    for name in ("train", "val", "test"):
        for item in splits[name]:
            owners.setdefault(item.group, set()).add(name)
            assert item.split == name
    assert all(len(names) == 1 for names in owners.values())
    assert len(owners) > 10


def test_official_splits_are_kept_and_a_group_takes_its_most_held_out_one(corpus: Corpus, splits: Splits) -> None:
    assigned = _splits_of(splits)
    expected = {"train": "train", "val": "val", "test": "test"}  # the catalog wrote "valid" as "val"
    for row in corpus.rows["captioned"]:
        if row.item_id in NO_VECTOR:
            continue
        if row.item_id.startswith(MIXED_SPLIT_GROUP + "@"):
            assert assigned[row.item_id] == "test"  # one clip is official train, the other test
        else:
            assert assigned[row.item_id] == expected[row.split]
    assert {name for item_id, name in assigned.items() if item_id.startswith("captioned:")} == {"train", "val", "test"}


def test_evaluation_flagged_and_test_parts_never_reach_training(corpus: Corpus, splits: Splits) -> None:
    assigned = _splits_of(splits)
    held_out = [row for row in corpus.rows["bench"] if row.held_out]
    assert {row.split for row in held_out} == {"train", "test"}  # flagged train rows, and test_a written as test
    assert len(held_out) >= 4
    assert all(assigned[row.item_id] == "test" for row in held_out)
    assert all(assigned[row.item_id] == "train" for row in corpus.rows["bench"] if row not in held_out)


def test_rows_without_a_vector_or_text_are_left_out_and_counted(splits: Splits) -> None:
    assigned = _splits_of(splits)
    assert not set(NO_VECTOR) & set(assigned) and NO_TEXT not in assigned
    assert splits.skipped == {"no_vector": 2, "no_text": 1}
    assert splits.audio_dim == DIM
    assert len(assigned) == 8 * 2 + 8 * 2 + 8 - 3


def test_splits_are_deterministic_and_hashed_groups_depend_on_the_seed(corpus: Corpus, splits: Splits) -> None:
    again = load_splits(corpus.root, DATASETS, MODEL, SPACE, seed=3)
    assert again == splits
    tagged = [row.item_id for row in corpus.rows["tagged"] if row.item_id != NO_TEXT]
    by_seed = [
        [_splits_of(load_splits(corpus.root, ["tagged"], MODEL, SPACE, seed=seed, fractions=(0.5, 0.5, 0)))[item_id]
         for item_id in tagged]
        for seed in (0, 1, 2)
    ]
    assert len({tuple(assignment) for assignment in by_seed}) > 1


def test_texts_are_captions_else_the_tag_sentence(corpus: Corpus, splits: Splits) -> None:
    items = {item.item_id: item for name in ("train", "val", "test") for item in splits[name]}
    captioned = next(row for row in corpus.rows["captioned"] if row.item_id in items)
    tagged = next(row for row in corpus.rows["tagged"] if row.item_id in items)
    assert items[captioned.item_id].texts == captioned.captions and len(captioned.captions) == 2
    assert items[tagged.item_id].texts == (tags_sentence(tagged.tags),)


def test_pairs_hold_the_stored_vectors_across_shards(corpus: Corpus, splits: Splits) -> None:
    stored = {
        item_id: vector
        for dataset in DATASETS
        for shard in iter_shards(corpus.root.shard_dir(MODEL, dataset, SPACE))
        for item_id, vector in zip(shard.item_ids, shard.embeddings(), strict=True)
    }
    dataset = PairDataset(splits.train)
    assert len({item.shard for item in splits.train}) >= 3  # two shards of captioned, and the others
    order = [5, 0, len(dataset) - 1, 5, 2]
    pairs = dataset.__getitems__(order)
    for index, (_, vector) in zip(order, pairs, strict=True):
        np.testing.assert_array_equal(vector, stored[splits.train[index].item_id])
    assert dataset[3][1].tolist() == stored[splits.train[3].item_id].tolist()


def test_each_epoch_shows_the_next_caption_deterministically(splits: Splits) -> None:
    dataset = PairDataset(splits.train, seed=7)
    index = next(i for i, item in enumerate(splits.train) if len(item.texts) == 2)
    seen = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        seen.append(dataset[index][0])
    assert set(seen[:2]) == set(splits.train[index].texts)
    assert seen[2:] == seen[:2]
    assert [PairDataset(splits.train, seed=7).text(i) for i in range(6)] == [
        PairDataset(splits.train, seed=7).text(i) for i in range(6)]


def test_workers_read_with_their_own_handles_and_match_the_main_process(splits: Splits) -> None:
    dataset = PairDataset(splits.train)
    dataset.reader.read(splits.train[:2])  # a handle opened here must not be reused in the forked workers

    def batches(workers: int) -> list[tuple[list[str], torch.Tensor]]:
        sampler = EpochBatches(len(dataset), 4, seed=0, epoch=1)
        return list(pair_loader(dataset, sampler, num_workers=workers))

    in_process, in_workers = batches(0), batches(2)
    assert len(in_process) == len(splits.train) // 4
    for (texts, vectors), (worker_texts, worker_vectors) in zip(in_process, in_workers, strict=True):
        assert texts == worker_texts
        assert torch.equal(vectors, worker_vectors)


def test_epoch_batches_are_full_seeded_and_resume_mid_epoch() -> None:
    whole = list(EpochBatches(10, 3, seed=1, epoch=0))
    assert len(whole) == 3 and all(len(batch) == 3 for batch in whole)
    assert len({i for batch in whole for i in batch}) == 9
    assert list(EpochBatches(10, 3, seed=1, epoch=0, start=1)) == whole[1:]
    assert list(EpochBatches(10, 3, seed=1, epoch=1)) != whole
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatches(2, 3, seed=0, epoch=0)


def test_missing_embeddings_and_manifests_say_what_to_run(corpus: Corpus, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run `musictext embed tagged --model other-model` first$"):
        load_splits(corpus.root, ["tagged"], "other-model", SPACE)
    with pytest.raises(FileNotFoundError, match=f"no {MODEL} embeddings in space space-2 for tagged"):
        load_splits(corpus.root, ["tagged"], MODEL, "space-2")
    with pytest.raises(FileNotFoundError, match="run its catalog"):
        load_splits(corpus.root, ["nowhere"], MODEL, SPACE)
    with pytest.raises(ValueError, match="summing to 1"):
        load_splits(corpus.root, ["tagged"], MODEL, SPACE, fractions=(0.5, 0.2, 0.2))


def test_vector_locations_hold_every_stored_row_of_the_space(corpus: Corpus) -> None:
    found = vector_locations(corpus.root, MODEL, "tagged", SPACE)
    locations, dim = found.locations, found.dim
    [path] = shard_paths(corpus.root.shard_dir(MODEL, "tagged", SPACE))
    assert dim == DIM and open_shard(path).space == SPACE
    assert locations == {item_id: (path, row) for row, item_id in enumerate(open_shard(path).item_ids)}


def _own_corpus(tmp_path: Path) -> Corpus:
    """A corpus of its own, for tests that put shards where they do not belong."""
    return build_corpus(tmp_path / "corpus", tracks=8)


def test_a_shard_of_another_space_among_the_spaces_shards_is_refused_by_name(tmp_path: Path) -> None:
    corpus = _own_corpus(tmp_path)
    attrs = ShardAttributes(MODEL, "1", DIM, "e", 22050, 1.0, 0.25, "0", space="navidrome-2025.11")
    with ShardWriter(corpus.root.shard_dir(MODEL, "tagged", SPACE), attrs) as writer:
        writer.append(["tagged:s000@0"], np.eye(1, DIM, dtype=np.float32))
    stray = writer.path
    message = f"shard {stray} holds vectors of space navidrome-2025.11, not {SPACE}"
    with pytest.raises(ValueError, match=message):
        vector_locations(corpus.root, MODEL, "tagged", SPACE)
    with pytest.raises(ValueError, match=message):
        load_splits(corpus.root, DATASETS, MODEL, SPACE)
    load_splits(corpus.root, ["captioned", "bench"], MODEL, SPACE)  # the other datasets are still fine


def test_a_shard_without_a_space_is_refused_too(tmp_path: Path) -> None:
    corpus = _own_corpus(tmp_path)
    attrs = ShardAttributes(MODEL, "1", DIM, "e", 22050, 1.0, 0.25, "0")  # written before spaces existed
    with ShardWriter(corpus.root.shard_dir(MODEL, "bench", SPACE), attrs) as writer:
        writer.append(["bench:b000"], np.eye(1, DIM, dtype=np.float32))
    with pytest.raises(ValueError, match=rf"shard {writer.path} holds vectors of space \(none\), not {SPACE}"):
        load_splits(corpus.root, ["bench"], MODEL, SPACE)


def test_shards_only_in_the_layout_before_spaces_give_a_hint_about_the_older_space(tmp_path: Path) -> None:
    corpus = _own_corpus(tmp_path)
    current = corpus.root.shard_dir(MODEL, "tagged", SPACE)
    legacy = corpus.root.path / "embeddings" / MODEL / "tagged"
    legacy.parent.mkdir(parents=True)
    current.rename(legacy)  # as the code before spaces left them: embeddings/<model>/<dataset>
    with pytest.raises(FileNotFoundError) as refused:
        load_splits(corpus.root, ["tagged"], MODEL, SPACE)
    message = str(refused.value)
    assert f"no {MODEL} embeddings in space {SPACE} for tagged under {current}" in message
    assert f"`musictext embed tagged --model {MODEL}`" in message
    assert f"the shards under {legacy} are of an older space and are not used" in message
