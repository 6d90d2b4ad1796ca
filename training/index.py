"""FAISS indexes of one audio model's shards, one per dataset directory, kept in step with new shards.

Exact search (:mod:`training.search`) reads every vector for every query: fine for thousands of clips, slow for
a library of millions. ``musictext index build`` writes ``faiss/`` beside a dataset's shards:

* ``index.faiss``: ``flat`` (``IndexFlatIP``: exact, the default), ``ivf`` (``IndexIVFFlat``, for large
  collections; ``nlist`` ≈ 4·√n lists, ``nprobe`` searched) or ``hnsw`` (``IndexHNSWFlat``, M = 32) over the
  rows L2-normalised, so inner product is the cosine exact search computes;
* ``index.json``: the kind, its parameters, and the shards it holds in order with their row counts. Position
  ``p`` in the index is row ``p - offset`` of the shard whose rows cover it, so no id table is stored: ids are
  read from the shards themselves.

Shards are immutable once published, so keeping the index in step is adding the shards it does not hold yet
(:func:`build_index` again; search uses the index for the shards it holds and exact search for newer ones). A
shard that left the directory (quarantined, moved aside) makes the index stale: search ignores it until it is
rebuilt. An IVF index is retrained when the collection has grown fourfold since its lists were made.

Approximate kinds report their recall@10 against exact search when built, measured on queries made from stored
vectors plus noise (real text queries are not at hand at build time), so a user sees what the speed costs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from store.atomic import atomic_path, write_text_atomic
from store.shards import Shard, open_shard, shard_paths

INDEX_DIR = "faiss"
INDEX_FILE = "index.faiss"
STATE_FILE = "index.json"
KINDS = ("flat", "ivf", "hnsw")
HNSW_M = 32
HNSW_EF_SEARCH = 128
IVF_TRAIN_ROWS_PER_LIST = 39
"""FAISS's own minimum of training points per list (it warns below it)."""
IVF_REGROW = 4
RECALL_QUERIES = 200
READ_ROWS = 4096


@dataclass
class IndexState:
    kind: str
    dim: int
    space: str
    shards: list[tuple[str, int]] = field(default_factory=list)
    """Shard file names in index order, with their row counts."""
    params: dict[str, int] = field(default_factory=dict)
    trained_rows: int = 0
    """Rows an IVF index's lists were made from."""
    recall_at_10: float | None = None
    """Against exact search when last measured (a full build); None for ``flat``, which is exact."""

    @property
    def rows(self) -> int:
        return sum(count for _, count in self.shards)


@dataclass(frozen=True)
class BuildReport:
    directory: Path
    kind: str
    rows: int
    added: int
    rebuilt: bool
    recall_at_10: float | None


def index_dir(shard_dir: Path) -> Path:
    return Path(shard_dir) / INDEX_DIR


def read_state(shard_dir: Path) -> IndexState | None:
    """The index's state, or None when there is no index (or its state cannot be read: rebuilt then)."""
    path = index_dir(shard_dir) / STATE_FILE
    if not path.is_file() or not (index_dir(shard_dir) / INDEX_FILE).is_file():
        return None
    try:
        data = json.loads(path.read_text())
        data["shards"] = [(name, int(count)) for name, count in data["shards"]]
        return IndexState(**data)
    except (ValueError, KeyError, TypeError):
        return None


def build_index(shard_dir: Path, *, kind: str = "flat", rebuild: bool = False, seed: int = 0) -> BuildReport:
    """Index the shards of ``shard_dir`` not yet indexed (all of them, for a new index or ``rebuild``)."""
    import faiss

    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; the kinds are {', '.join(KINDS)}")
    shards = [open_shard(path) for path in shard_paths(shard_dir)]
    if not shards:
        raise FileNotFoundError(f"no shards under {shard_dir}; embed the dataset first")
    state = read_state(shard_dir)
    total = sum(len(shard.item_ids) for shard in shards)
    if rebuild or not _extendable(state, kind, shards, total):
        return _full_build(faiss, shard_dir, kind, shards, seed)
    index = faiss.read_index(str(index_dir(shard_dir) / INDEX_FILE))
    held = {name for name, _ in state.shards}
    new = [shard for shard in shards if shard.path.name not in held]
    for shard in new:
        for block in _blocks(shard):
            index.add(block)
        state.shards.append((shard.path.name, len(shard.item_ids)))
    _save(faiss, shard_dir, index, state)
    return BuildReport(Path(shard_dir), kind, state.rows, sum(len(s.item_ids) for s in new), False,
                       state.recall_at_10)


def _extendable(state: IndexState | None, kind: str, shards: list[Shard], total: int) -> bool:
    """Whether ``state``'s index can be brought up to date by adding shards."""
    if state is None or state.kind != kind:
        return False
    present = {shard.path.name: len(shard.item_ids) for shard in shards}
    if any(present.get(name) != count for name, count in state.shards):
        return False
    return kind != "ivf" or total < IVF_REGROW * max(state.trained_rows, 1)


def _full_build(faiss, shard_dir: Path, kind: str, shards: list[Shard], seed: int) -> BuildReport:  # noqa: ANN001
    dim = int(shards[0].attrs["dim"])
    total = sum(len(shard.item_ids) for shard in shards)
    index, params = new_index(faiss, kind, dim, total)
    if kind == "ivf":
        index.train(_training_sample(shards, IVF_TRAIN_ROWS_PER_LIST * params["nlist"] * 4, seed))
    queries = _recall_queries(shards, seed) if kind != "flat" else None
    exact = faiss.IndexFlatIP(dim) if queries is not None else None
    for shard in shards:
        for block in _blocks(shard):
            index.add(block)
            if exact is not None:
                exact.add(block)
    recall = _recall_at_10(index, exact, queries) if exact is not None else None
    state = IndexState(kind, dim, shards[0].space, [(s.path.name, len(s.item_ids)) for s in shards], params,
                       total if kind == "ivf" else 0, recall)
    _save(faiss, shard_dir, index, state)
    return BuildReport(Path(shard_dir), kind, total, total, True, recall)


def new_index(faiss, kind: str, dim: int, rows: int):  # noqa: ANN001, ANN201 (faiss has no type stubs)
    """An empty index of ``kind`` for about ``rows`` vectors of ``dim``, and its parameters (IVF: untrained)."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim), {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index, {"M": HNSW_M, "efSearch": HNSW_EF_SEARCH}
    nlist = max(1, min(int(4 * math.sqrt(rows)), rows // IVF_TRAIN_ROWS_PER_LIST))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = max(1, nlist // 8)
    return index, {"nlist": nlist, "nprobe": index.nprobe}


def _blocks(shard: Shard) -> Iterator[np.ndarray]:
    """The shard's rows, L2-normalised, a block at a time (a zero row stays zero and scores 0, as in exact search)."""
    for start in range(0, len(shard.item_ids), READ_ROWS):
        block = np.ascontiguousarray(shard.embeddings(slice(start, start + READ_ROWS)), dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        yield block / np.maximum(norms, np.finfo(np.float32).tiny)


def _training_sample(shards: list[Shard], size: int, seed: int) -> np.ndarray:
    total = sum(len(shard.item_ids) for shard in shards)
    rng = np.random.default_rng(seed)
    return _rows_at(shards, rng.choice(total, size=min(size, total), replace=False))


def _recall_queries(shards: list[Shard], seed: int) -> np.ndarray:
    """Stored vectors plus noise of the same size, normalised: near the data, as a real query is, but not on it."""
    rng = np.random.default_rng(seed)
    total = sum(len(shard.item_ids) for shard in shards)
    rows = _rows_at(shards, rng.choice(total, size=min(RECALL_QUERIES, total), replace=False))
    noise = rng.normal(size=rows.shape).astype(np.float32)
    noisy = rows + noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def _rows_at(shards: list[Shard], positions: np.ndarray) -> np.ndarray:
    """Normalised rows at global ``positions`` (shards in order), read shard by shard in increasing row order."""
    offsets = np.cumsum([0] + [len(shard.item_ids) for shard in shards])
    parts = []
    for number, shard in enumerate(shards):
        rows = np.sort(positions[(positions >= offsets[number]) & (positions < offsets[number + 1])]) - offsets[number]
        if len(rows):
            parts.append(shard.embeddings(rows))
    block = np.concatenate(parts).astype(np.float32)
    return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), np.finfo(np.float32).tiny)


def _recall_at_10(index, exact, queries: np.ndarray) -> float:  # noqa: ANN001
    k = min(10, exact.ntotal)
    _, found = index.search(queries, k)
    _, truth = exact.search(queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))


def _save(faiss, shard_dir: Path, index, state: IndexState) -> None:  # noqa: ANN001
    """The index first, then the state naming what it holds: a reader that sees the new state sees its index
    (a crash between the two leaves a state that under-counts, and the next build rebuilds)."""
    folder = index_dir(shard_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / INDEX_FILE) as temp:
        faiss.write_index(index, str(temp))
    write_text_atomic(folder / STATE_FILE, json.dumps(asdict(state), indent=2) + "\n")


@dataclass(frozen=True)
class IndexedShards:
    """What a search can take from a dataset's index: the index and the shards it holds, in its order."""

    index: object
    state: IndexState
    shards: list[Path]
    offsets: np.ndarray
    """Index position where each shard's rows start."""


def usable_index(shard_dir: Path) -> IndexedShards | None:
    """The dataset's index when every shard it holds is still there unchanged, else None (search exactly)."""
    state = read_state(shard_dir)
    if state is None:
        return None
    paths = [Path(shard_dir) / name for name, _ in state.shards]
    if not all(path.is_file() for path in paths):
        return None
    import faiss

    index = faiss.read_index(str(index_dir(shard_dir) / INDEX_FILE))
    if index.ntotal != state.rows:
        return None
    offsets = np.cumsum([0] + [count for _, count in state.shards])[:-1]
    return IndexedShards(index, state, paths, offsets)
