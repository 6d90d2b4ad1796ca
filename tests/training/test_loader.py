"""The training loader at disk speed: epochs shuffle blocks of stored rows, then rows within a window of blocks,
read a window at once; every pair once per epoch, the order reproduced on resume, and a bounded number of open
shards whatever their number (an epoch over 300 shards under a limit of 64 open files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import training.data
from store.shards import ShardAttributes, ShardWriter
from training.data import SHUFFLE_BLOCKS, EpochBatches, Item, PairDataset, ShardReader, pair_loader

SHARDS = 300
ROWS = 12
NOT_TRAIN = 2
"""Row of every shard that is not a training item, so reads cross holes, as a split leaves them."""
CHUNK_ROWS = 2
DIM = 8
READ_BYTES = 4 * CHUNK_ROWS * DIM * 2
"""Read units of 4 float16 chunks (8 rows): each shard has two blocks, rows 0-7 and 8-11."""
UNIT_ROWS = 8
BATCH = 10

EPOCH_UNDER_LOW_LIMIT = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
import training.data
from training.data import EpochBatches, Item, PairDataset, pair_loader
training.data.READ_BYTES = int(sys.argv[3])
items = [Item(i, "d", i, "train", (i,), (), Path(shard), row) for i, shard, row in json.load(open(sys.argv[1]))]
dataset = PairDataset(items, seed=5)
seen = {}
for workers in (0, 2):
    sampler = EpochBatches(len(dataset), int(sys.argv[2]), seed=5, epoch=1, blocks=dataset.blocks)
    batches = pair_loader(dataset, sampler, num_workers=workers)
    seen[workers] = [[text, int(v[0]) * 64 + int(v[1])] for texts, vs in batches for text, v in zip(texts, vs)]
dataset.reader.close()
print(json.dumps(seen))
"""


@pytest.fixture(autouse=True)
def small_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training.data, "READ_BYTES", READ_BYTES)


def _item(number: int, shard: Path, row: int) -> Item:
    return Item(f"s{number}", "d", f"s{number}", "train", (f"s{number}",), (), shard, row)


def _number(item_id: str) -> int:
    return int(item_id[1:])


def _stored_number(vectors: torch.Tensor | np.ndarray) -> list[int]:
    return [int(row[0]) * 64 + int(row[1]) for row in vectors]


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    """Training items over ``SHARDS`` small float16 shards of ``ROWS`` rows in chunks of ``CHUNK_ROWS``; each
    vector's first two values are its item's number (:func:`_stored_number`), so a batch tells which items it
    holds."""
    directory = tmp_path_factory.mktemp("shards")
    attrs = ShardAttributes("m", "1", DIM, "e", 22050, 1.0, 0.25, "0", space="s")
    found = []
    for shard in range(SHARDS):
        numbers = np.arange(shard * ROWS, (shard + 1) * ROWS)
        vectors = np.zeros((ROWS, DIM), dtype=np.float16)
        vectors[:, :2] = np.stack([numbers // 64, numbers % 64], axis=1)  # exact in float16
        vectors[:, 2:] = np.random.default_rng(shard).normal(size=(ROWS, DIM - 2))
        with ShardWriter(directory, attrs, dtype="float16", chunk_rows=CHUNK_ROWS) as writer:
            writer.append([f"s{n}" for n in numbers], vectors)
        found += [_item(int(n), writer.path, row) for row, n in enumerate(numbers) if row != NOT_TRAIN]
    return found


@pytest.fixture(scope="module")
def dataset(items: list[Item]) -> PairDataset:
    return PairDataset(items, seed=5)


def test_an_epoch_over_300_shards_visits_every_pair_once_under_a_limit_of_64_open_files(
        items: list[Item], tmp_path: Path) -> None:
    listing = tmp_path / "items.json"
    listing.write_text(json.dumps([[item.item_id, str(item.shard), item.row] for item in items]))
    done = subprocess.run([sys.executable, "-c", EPOCH_UNDER_LOW_LIMIT, str(listing), str(BATCH), str(READ_BYTES)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    everything = sorted(_number(item.item_id) for item in items)
    for workers in ("0", "2"):
        assert sorted(number for _, number in seen[workers]) == everything
        assert all(_number(text) == number for text, number in seen[workers])  # text and vector stay paired
    assert seen["0"] == seen["2"]


def test_blocks_are_the_training_rows_of_one_read_unit_of_whole_chunks(dataset: PairDataset,
                                                                         items: list[Item]) -> None:
    by_block: dict[int, set[tuple[Path, int]]] = {}
    for item, block in zip(items, dataset.blocks, strict=True):
        by_block.setdefault(int(block), set()).add((item.shard, item.row // UNIT_ROWS))
    assert all(len(units) == 1 for units in by_block.values())
    assert len(by_block) == SHARDS * 2


def _flat(batches: list[list[int]]) -> list[int]:
    return [index for batch in batches for index in batch]


def test_the_block_shuffled_order_is_a_permutation_seeded_per_epoch_and_resumed_exactly() -> None:
    blocks = np.arange(400) // 5  # 80 blocks of 5
    whole = list(EpochBatches(400, 8, seed=1, epoch=0, blocks=blocks))
    assert sorted(_flat(whole)) == list(range(400))
    assert list(EpochBatches(400, 8, seed=1, epoch=0, blocks=blocks)) == whole
    assert list(EpochBatches(400, 8, seed=1, epoch=1, blocks=blocks)) != whole
    assert list(EpochBatches(400, 8, seed=2, epoch=0, blocks=blocks)) != whole
    assert list(EpochBatches(400, 8, seed=1, epoch=0, start=17, blocks=blocks)) == whole[17:]


def test_each_block_is_read_in_one_window_of_shuffled_rows() -> None:
    blocks = np.arange(400) // 5
    sampler = EpochBatches(400, 8, seed=1, epoch=0, blocks=blocks)
    windows = sampler.windows()
    assert _flat(windows) == _flat(list(sampler))
    window_of = {index: number for number, window in enumerate(windows) for index in window}
    assert all(len({window_of[i] for i in np.flatnonzero(blocks == block)}) == 1 for block in range(80))
    assert [len({blocks[i] for i in window}) for window in windows] == [SHUFFLE_BLOCKS] * (80 // SHUFFLE_BLOCKS)
    assert all(len({blocks[i] for i in batch}) > 1 for batch in sampler)  # rows are mixed, not read in runs


def test_a_resumed_epoch_reads_only_what_it_has_left() -> None:
    blocks = np.arange(403) // 5  # the last 3 items make no full batch and are not read
    sampler = EpochBatches(403, 8, seed=1, epoch=0, blocks=blocks)
    resumed = EpochBatches(403, 8, seed=1, epoch=0, start=17, blocks=blocks)
    assert _flat(resumed.windows()) == _flat(list(sampler))[17 * 8:] == _flat(list(resumed))


def test_shards_of_every_batch_make_the_whole_batches_and_read_only_their_rows() -> None:
    """What each of several training processes takes: slice ``shard`` of each batch, from a resumed start too."""
    blocks = np.arange(403) // 5
    whole = list(EpochBatches(403, 8, seed=1, epoch=0, start=5, blocks=blocks))
    shards = [EpochBatches(403, 8, seed=1, epoch=0, start=5, blocks=blocks, shard=shard, shards=4)
              for shard in range(4)]
    assert [_flat(parts) for parts in zip(*shards, strict=True)] == whole
    assert all(len(batch) == 2 for sampler in shards for batch in sampler)
    assert all(_flat(sampler.windows()) == _flat(list(sampler)) for sampler in shards)
    with pytest.raises(ValueError, match="slice 0 of 3 equal slices of a batch of 8"):
        EpochBatches(403, 8, seed=1, epoch=0, shards=3)


@pytest.mark.parametrize("start", [0, 13])
def test_the_loader_gives_the_samplers_batches_with_their_texts_and_vectors(dataset: PairDataset,
                                                                          start: int) -> None:
    sampler = EpochBatches(len(dataset), BATCH, seed=5, epoch=2, start=start, blocks=dataset.blocks)
    loaded = list(pair_loader(dataset, sampler))
    assert len(loaded) == len(sampler)
    for indices, (texts, vectors) in zip(sampler, loaded, strict=True):
        expected_texts, expected_vectors = dataset.batch(indices)
        assert texts == expected_texts and torch.equal(vectors, expected_vectors)
        assert [_number(text) for text in texts] == _stored_number(vectors)


def test_scattered_repeated_rows_read_back_exactly(items: list[Item]) -> None:
    reader = ShardReader()
    picked = [items[i] for i in (7, 0, 3, 4, 3, 600, 9, 8, 1, 1400, 5, 10, 2)]
    read = reader.read(picked)
    reader.close()
    assert read.dtype == np.float32
    assert _stored_number(read) == [_number(item.item_id) for item in picked]
