"""One dataset as a corpus for the Hugging Face ecosystem: Parquet shards per split and a dataset card.

``datasets.load_dataset("parquet", data_dir=OUT)``, ``load_dataset(OUT)`` and the Hub's viewer open the folder
with no musictext installed: every value the rows need is inside the Parquet files, the clips included (their
FLAC bytes as stored, neither decoded nor re-encoded), and the Parquet schema carries the ``datasets`` features
(``audio`` an ``Audio`` feature with the clips' sampling rate, ``vector`` a fixed-length float32 list).

The rows are written with pyarrow under the schema ``datasets.Features`` makes, metadata included, not through
``Dataset.from_generator``: ``datasets`` 5 encodes every audio value through torchcodec and torch, which this
export must not need, and ``from_generator`` would first copy every clip into an Arrow cache as large as the
corpus. Memory stays bounded by one row group (at most ``ROW_GROUP_ROWS`` rows and ``ROW_GROUP_BYTES`` of
audio); the folder is built beside ``out`` and renamed into place only when complete.

What is left out and what is null: items whose clip is missing (never acquired, or rejected by preprocess) are
left out, as a corpus row without audio serves no audio-text use, and counted; exported items with no vector
of the chosen model keep their row with a null ``vector``, as the audio and text are still whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from datasets import Audio, DatasetInfo, Features, Sequence, SplitDict, SplitInfo, Value
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from store.atomic import temp_path_for
from store.errors import InvalidInputError
from store.layout import DataRoot, clip_name
from store.manifest import ManifestRow, read_manifest
from store.shard_index import vector_locations

SHARD_BYTES = 500 * 10**6
"""Largest Parquet file (before the last row group that crosses it): the size ``push_to_hub`` shards at."""
ROW_GROUP_ROWS = 100
"""Rows per Parquet row group: a reader (and the Hub's viewer) reads a whole group to show one row."""
ROW_GROUP_BYTES = 32 * 2**20
"""Audio bytes per row group, so that whole tracks do not make a group (and this process's memory) huge."""
DEFAULT_SPLIT = "train"
"""The split of items whose manifest row names none."""

ProgressCallback = Callable[[int, int], None]
"""Called with (items written, items to write) after each row group."""


class CorpusExportError(InvalidInputError):
    """The export cannot start from what is there (no manifest, no clips, no shards, ``out`` not empty); the
    message says what to do."""


@dataclass(frozen=True)
class SplitExport:
    name: str
    rows: int
    files: tuple[Path, ...]
    arrow_bytes: int
    """The split's size as Arrow tables (what ``datasets`` records as a split's ``num_bytes``)."""


@dataclass(frozen=True)
class CorpusExport:
    """What was written: ``out`` holds ``README.md`` and ``data/<split>-NNNNN-of-NNNNN.parquet``."""

    out: Path
    card: Path
    splits: tuple[SplitExport, ...]
    sample_rate: int
    missing_clips: tuple[str, ...]
    """Manifest items left out because their clip is not in the data root."""
    missing_vectors: tuple[str, ...]
    """Exported items whose ``vector`` is null (no vector of the chosen model); empty without a model."""
    model: str | None = None
    space: str | None = None

    @property
    def rows(self) -> int:
        return sum(split.rows for split in self.splits)


def split_name(value: str | None) -> str:
    """The ``datasets`` split of a manifest split: ``train`` for none; characters a split name cannot hold
    (``datasets`` allows ``\\w+(\\.\\w+)*``) become ``_``. The row's ``split`` column keeps the original."""
    if not value:
        return DEFAULT_SPLIT
    return ".".join(re.sub(r"\W+", "_", part) for part in value.split(".") if part) or DEFAULT_SPLIT


def export_corpus(
    root: DataRoot,
    dataset: str,
    out: Path,
    *,
    model: str | None = None,
    space: str | None = None,
    force: bool = False,
    description: str = "",
    shard_bytes: int = SHARD_BYTES,
    progress: ProgressCallback | None = None,
) -> CorpusExport:
    """Write ``dataset``'s corpus to ``out`` (module docstring); with ``model``, its vectors in ``space`` too.

    ``out`` must be empty or absent unless ``force`` replaces it, and lie outside the data root.
    ``description`` opens the dataset card. Raises :class:`CorpusExportError` for what the user can fix.
    """
    if (model is None) != (space is None):
        raise ValueError("model and space go together: the vectors of a model are read from one space")
    rows = _manifest_rows(root, dataset)
    out = out.resolve()
    _check_out(out, root, force)
    vectors = _VectorIndex.load(root, dataset, model, space) if model and space else None
    present, missing = _split_present(root, dataset, rows)
    sample_rate = _sample_rate(root, dataset, present)
    features = _features(sample_rate, vectors.dim if vectors else None)
    writer = _SplitWriter(root, dataset, features, vectors, shard_bytes, _Tally(len(present), progress))
    with _building(out) as build:
        splits = tuple(_moved(writer.write(build / "data", name, items), build, out)
                       for name, items in _by_split(present).items())
        result = CorpusExport(
            out=out, card=out / "README.md", splits=splits, sample_rate=sample_rate,
            missing_clips=tuple(row.item_id for row in missing), missing_vectors=tuple(writer.missing_vectors),
            model=model, space=space,
        )
        card = _Card(dataset, description, present, result, features, vectors)
        (build / "README.md").write_text(card.text(), encoding="utf-8")
    return result


def _manifest_rows(root: DataRoot, dataset: str) -> list[ManifestRow]:
    path = root.manifest(dataset)
    if not path.exists():
        known = ", ".join(root.datasets()) or "none"
        raise CorpusExportError(f"no manifest for {dataset!r} at {path} (datasets with one: {known}); "
                                f"run `musictext ingest {dataset}` first")
    rows = read_manifest(path)
    if not rows:
        raise CorpusExportError(f"the manifest of {dataset!r} at {path} has no items")
    return rows


def _check_out(out: Path, root: DataRoot, force: bool) -> None:
    """``out`` may be replaced (``force``), so it must be neither the data root, nor inside it, nor above it."""
    if out.is_relative_to(root.path) or root.path.is_relative_to(out):
        raise CorpusExportError(f"--out {out} overlaps the data root {root.path}; export to a folder outside it")
    if out.exists() and not out.is_dir():
        raise CorpusExportError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CorpusExportError(f"--out {out} is not empty; choose an empty folder or pass --force to replace it")


def _split_present(root: DataRoot, dataset: str, rows: list[ManifestRow]) -> tuple[list[ManifestRow],
                                                                                   list[ManifestRow]]:
    """(rows with a clip, rows without one)."""
    present, missing = [], []
    for row in rows:
        (present if root.clip_path(dataset, row.item_id).is_file() else missing).append(row)
    if not present:
        raise CorpusExportError(f"none of the {len(rows)} items of {dataset!r} has a clip under "
                                f"{root.clip_dir(dataset)}; run `musictext preprocess {dataset}` first")
    return present, missing


def _sample_rate(root: DataRoot, dataset: str, rows: list[ManifestRow]) -> int:
    """The one rate of the clips (read from their headers), which the ``Audio`` feature declares."""
    rates: Counter[int] = Counter()
    for row in rows:
        path = root.clip_path(dataset, row.item_id)
        try:
            rates[sf.info(str(path)).samplerate] += 1
        except sf.LibsndfileError as error:
            raise CorpusExportError(f"the clip {path} cannot be read ({error}); check it with "
                                    f"`musictext verify {dataset}`") from None
    if len(rates) > 1:
        found = ", ".join(f"{rate} Hz ×{count}" for rate, count in rates.most_common())
        raise CorpusExportError(f"the clips of {dataset!r} have several sample rates ({found}); a corpus "
                                "declares one, so preprocess them again at one rate")
    return next(iter(rates))


def _features(sample_rate: int, dim: int | None) -> Features:
    columns = {
        "item_id": Value("string"), "source": Value("string"), "split": Value("string"),
        "start_s": Value("float64"), "end_s": Value("float64"),
        "captions": Sequence(Value("string")), "tags": Sequence(Value("string")),
        "license": Value("string"), "extra": Value("string"), "audio": Audio(sampling_rate=sample_rate),
    }
    if dim is not None:
        columns["vector"] = Sequence(Value("float32"), length=dim)
    return Features(columns)


def _by_split(rows: Iterable[ManifestRow]) -> dict[str, list[ManifestRow]]:
    """Rows per split name, splits in the order the manifest first names them."""
    splits: dict[str, list[ManifestRow]] = {}
    for row in rows:
        splits.setdefault(split_name(row.split), []).append(row)
    return splits


def _moved(split: SplitExport, build: Path, out: Path) -> SplitExport:
    """``split`` with its files where they will be once ``build`` has become ``out``."""
    return replace(split, files=tuple(out / path.relative_to(build) for path in split.files))


@contextlib.contextmanager
def _building(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to build in; on success it takes ``out``'s place, on failure it is removed.

    An existing ``out`` (empty, or replaced with ``force``) is moved aside first and deleted after the swap, so
    ``out`` is never a mix of the old export and the new one.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    build = temp_path_for(out)
    build.mkdir()
    try:
        yield build
        if out.exists():
            old = temp_path_for(out)
            out.rename(old)
            try:
                build.rename(out)
            except OSError:
                old.rename(out)
                raise
            shutil.rmtree(old)
        else:
            build.rename(out)
    finally:
        shutil.rmtree(build, ignore_errors=True)


@dataclass
class _Tally:
    total: int
    progress: ProgressCallback | None
    done: int = 0

    def add(self, rows: int) -> None:
        self.done += rows
        if self.progress is not None:
            self.progress(self.done, self.total)


class _VectorIndex:
    """Where each item's vector is (shard, row), for one model, dataset and space; a later shard wins a repeat."""

    def __init__(self, locations: dict[str, tuple[Path, int]], attrs: dict[str, object]) -> None:
        self.locations = locations
        self.attrs = attrs
        self.dim = int(attrs["dim"])

    @classmethod
    def load(cls, root: DataRoot, dataset: str, model: str, space: str) -> _VectorIndex:
        try:
            found = vector_locations(root, model, dataset, space)
        except (FileNotFoundError, ValueError) as error:
            raise CorpusExportError(f"{error}, or leave out --model") from None
        return cls(found.locations, found.attrs)

    def read(self, item_ids: list[str]) -> list[np.ndarray | None]:
        """Each item's float32 vector, ``None`` for one without; one sorted read per shard."""
        vectors: list[np.ndarray | None] = [None] * len(item_ids)
        by_shard: dict[Path, list[int]] = {}
        for position, item_id in enumerate(item_ids):
            if item_id in self.locations:
                by_shard.setdefault(self.locations[item_id][0], []).append(position)
        for path, positions in by_shard.items():
            rows = np.array([self.locations[item_ids[p]][1] for p in positions])
            unique, inverse = np.unique(rows, return_inverse=True)
            block = _read_rows(path, unique)
            for position, index in zip(positions, inverse, strict=True):
                vectors[position] = block[index]
        return vectors


def _read_rows(path: Path, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted, unique) of a shard's embeddings, as float32."""
    with h5py.File(path, "r") as handle:
        return np.asarray(handle["embedding"][rows], dtype=np.float32)


class _SplitWriter:
    """Writes one split's rows as Parquet files of about ``shard_bytes`` each, named as ``push_to_hub`` names
    them (``<split>-00000-of-00002.parquet``) so that ``datasets`` finds every split without the card."""

    def __init__(self, root: DataRoot, dataset: str, features: Features, vectors: _VectorIndex | None,
                 shard_bytes: int, tally: _Tally) -> None:
        self.root = root
        self.dataset = dataset
        self.schema = features.arrow_schema
        self.vectors = vectors
        self.shard_bytes = shard_bytes
        self.group_bytes = min(ROW_GROUP_BYTES, shard_bytes)
        self.tally = tally
        self.missing_vectors: list[str] = []
        self.compression = {leaf: "none" if field.name == "audio" else "zstd"
                            for field in self.schema for leaf in _leaf_paths(field.name, field.type)}

    def write(self, directory: Path, split: str, rows: list[ManifestRow]) -> SplitExport:
        directory.mkdir(parents=True, exist_ok=True)
        parts: list[Path] = []
        writer: pq.ParquetWriter | None = None
        written = total = 0
        for group in self._groups(rows):
            if writer is None:
                parts.append(directory / f".{split}-{len(parts):05d}.parquet")
                writer, written = pq.ParquetWriter(parts[-1], self.schema, compression=self.compression), 0
            table = self._table(group)
            writer.write_table(table, row_group_size=len(group))
            written += table.nbytes
            total += table.nbytes
            self.tally.add(len(group))
            if written >= self.shard_bytes:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()
        return SplitExport(split, len(rows), _numbered(parts, split), total)

    def _groups(self, rows: list[ManifestRow]) -> Iterator[list[tuple[ManifestRow, bytes]]]:
        """Rows with their clip's bytes, in groups of at most ``ROW_GROUP_ROWS`` rows and ``group_bytes``."""
        group: list[tuple[ManifestRow, bytes]] = []
        size = 0
        for row in rows:
            flac = self.root.clip_path(self.dataset, row.item_id).read_bytes()
            if group and (len(group) == ROW_GROUP_ROWS or size + len(flac) > self.group_bytes):
                yield group
                group, size = [], 0
            group.append((row, flac))
            size += len(flac)
        if group:
            yield group

    def _table(self, group: list[tuple[ManifestRow, bytes]]) -> pa.Table:
        columns = {
            "item_id": [row.item_id for row, _ in group], "source": [row.source for row, _ in group],
            "split": [row.split for row, _ in group], "start_s": [row.start_s for row, _ in group],
            "end_s": [row.end_s for row, _ in group], "captions": [list(row.captions) for row, _ in group],
            "tags": [list(row.tags) for row, _ in group], "license": [row.license for row, _ in group],
            "extra": [row.extra for row, _ in group],
            "audio": [{"bytes": flac, "path": clip_name(row.item_id)}
                      for row, flac in group],
        }
        arrays = [pa.array(columns[name], type=self.schema.field(name).type) for name in columns]
        if self.vectors is not None:
            arrays.append(self._vector_column(self.vectors, [row.item_id for row, _ in group]))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _vector_column(self, index: _VectorIndex, item_ids: list[str]) -> pa.Array:
        """A fixed-size list per item, null where it has no vector (and counted in ``missing_vectors``)."""
        vectors = index.read(item_ids)
        self.missing_vectors.extend(item_id for item_id, v in zip(item_ids, vectors, strict=True) if v is None)
        dim = index.dim
        flat = np.concatenate([np.zeros(dim, np.float32) if v is None else v for v in vectors])
        mask = pa.array([v is None for v in vectors])
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim, mask=mask)


def _leaf_paths(name: str, arrow_type: pa.DataType) -> list[str]:
    """The Parquet column paths under one field (``audio.bytes``, ``captions.list.element``): per-column
    compression is set on these, not on the field's name."""
    if pa.types.is_struct(arrow_type):
        return [leaf for child in arrow_type for leaf in _leaf_paths(f"{name}.{child.name}", child.type)]
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return _leaf_paths(f"{name}.list.element", arrow_type.value_type)
    return [name]


def _numbered(parts: list[Path], split: str) -> tuple[Path, ...]:
    """Give the parts their final names, now that their number is known."""
    named = []
    for index, part in enumerate(parts):
        target = part.with_name(f"{split}-{index:05d}-of-{len(parts):05d}.parquet")
        os.replace(part, target)
        named.append(target)
    return tuple(named)


@dataclass(frozen=True)
class _Card:
    """The dataset card: YAML that ``load_dataset(OUT)`` and the Hub read (configs, features, split sizes,
    license), then what the folder holds, in words."""

    dataset: str
    description: str
    rows: list[ManifestRow]
    """The exported rows."""
    result: CorpusExport
    features: Features
    vectors: _VectorIndex | None

    def text(self) -> str:
        return f"---\n{self._metadata().to_yaml()}\n---\n\n{self._body()}"

    def _metadata(self) -> DatasetCardData:
        data = DatasetCardData(license=self._license_id(), pretty_name=f"musictext {self.dataset}",
                               tags=["audio", "music", "musictext"])
        splits = SplitDict()
        for split in self.result.splits:
            splits.add(SplitInfo(split.name, num_bytes=split.arrow_bytes, num_examples=split.rows))
        DatasetInfosDict({"default": DatasetInfo(features=self.features, splits=splits)}).to_dataset_card_data(data)
        configs = [{"split": split.name, "path": f"data/{split.name}-*"} for split in self.result.splits]
        MetadataConfigs({"default": {"data_files": configs}}).to_dataset_card_data(data)
        return data

    def _license_id(self) -> str:
        """The Hub's id when every exported item has the same SPDX-style license (``CC-BY-4.0`` → ``cc-by-4.0``),
        else ``other``: the body lists each license."""
        licenses = {row.license for row in self.rows}
        single = next(iter(licenses)) if len(licenses) == 1 else None
        return single.lower() if single and re.fullmatch(r"[A-Za-z0-9.+-]+", single) else "other"

    def _body(self) -> str:
        result = self.result
        lines = [f"# {self.dataset}", ""]
        if self.description:
            lines += [self.description, ""]
        lines += [
            f"{result.rows} items of the musictext dataset `{self.dataset}`, written by `musictext export-corpus`.",
            "", "| split | items | files |", "|---|---:|---:|",
            *(f"| {split.name} | {split.rows} | {len(split.files)} |" for split in result.splits), "",
            "## Columns", "",
            "- `item_id`: musictext's id (`<dataset>:<native id>[@<start s>]`); `source`: the file of the original "
            "dataset the clip was cut from, `start_s`/`end_s` where (null: the whole file).",
            "- `split`: the source's own split (null where it has none; such items are in `train`).",
            "- `captions`, `tags`: lists of strings; `extra`: the source's other fields, as JSON text.",
            f"- `audio`: the clip as musictext stores it, 16-bit FLAC at {result.sample_rate} Hz (mono or stereo), "
            "embedded in `audio.bytes`; `audio.path` is its file name only.",
            *self._vector_lines(), "", "## What is not here", "",
            f"- {len(result.missing_clips)} item(s) of the manifest have no clip (not acquired, or rejected by "
            "preprocessing) and are left out.",
            *([f"- {len(result.missing_vectors)} exported item(s) have no `{result.model}` vector: their `vector` "
               "is null."] if self.vectors else []),
            *self._license_lines(), "", _LOADING,
        ]
        return "\n".join(lines) + "\n"

    def _vector_lines(self) -> list[str]:
        if self.vectors is None:
            return []
        attrs = self.vectors.attrs
        return [
            f"- `vector`: the audio embedder `{self.result.model}`'s {self.vectors.dim}-dim float32 vector of the "
            f"clip, in space `{self.result.space}` (revision `{attrs.get('model_revision', '')}`, enrichment "
            f"`{attrs.get('enrichment', '')}`): compare it only with vectors of the same space.",
        ]

    def _license_lines(self) -> list[str]:
        licenses = Counter(row.license or "(none stated)" for row in self.rows)
        return ["", "## Licenses", "",
                "Each row's `license` holds its item's license as the source states it; check it before you "
                "redistribute the audio.", "",
                *(f"- `{name}`: {count} item(s)" for name, count in licenses.most_common())]


_LOADING = """## Loading

```python
from datasets import Audio, load_dataset

corpus = load_dataset("parquet", data_dir="path/to/this/folder")  # or load_dataset("path/to/this/folder")
```

`datasets` 4 and later decode `audio` with torchcodec. Without it, read the FLAC bytes yourself:

```python
import io, soundfile
rows = corpus["train"].cast_column("audio", Audio(decode=False))
samples, rate = soundfile.read(io.BytesIO(rows[0]["audio"]["bytes"]))
```"""
