"""Which items a shard folder holds, without opening every shard each time someone asks.

Planning an embed run and ``musictext status`` ask it of every shard folder, and at 100 items a shard a corpus of a
million items has 10,000 shards. Shards never change once published (a new one appears beside them), so the ids of
each shard are kept in ``cache/shard-ids/<space>/<model>/<dataset>.parquet`` with the size and mtime of the shard
they were read from: a shard whose size or mtime differs, or that is new, is read again; one that is gone is
dropped. The cache is derived data: one that cannot be read is rebuilt, never trusted in part.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from store.atomic import atomic_path
from store.quarantine import skip_damaged
from store.shards import open_shard_ids, shard_paths

STAMPS_KEY = b"musictext.shards"
SCHEMA = pa.schema([pa.field("shard", pa.string()), pa.field("item_id", pa.string())])


def cache_path(directory: Path) -> Path | None:
    """Where the cache of a shard folder under ``<root>/embeddings/`` lives; ``None`` for a folder elsewhere."""
    for parent in directory.parents:
        if parent.name == "embeddings":
            return parent.parent.joinpath("cache", "shard-ids", *directory.relative_to(parent).parts[:-1],
                                          f"{directory.name}.parquet")
    return None


def _read_cache(path: Path | None) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    try:
        table = pq.ParquetFile(path).read()
        stamps = json.loads(table.schema.metadata[STAMPS_KEY])
    except Exception:  # missing, damaged or of another layout: rebuilt from the shards
        return {}, {}
    ids: dict[str, list[str]] = {name: [] for name in stamps}
    for shard, item_id in zip(table.column("shard").to_pylist(), table.column("item_id").to_pylist(), strict=True):
        ids.setdefault(shard, []).append(item_id)
    return stamps, ids


def _write_cache(path: Path, stamps: dict[str, list[int]], ids: dict[str, list[str]]) -> None:
    shards = [name for name in ids for _ in ids[name]]
    table = pa.table({"shard": shards, "item_id": [item for name in ids for item in ids[name]]}, schema=SCHEMA)
    with atomic_path(path) as temp:
        pq.write_table(table.replace_schema_metadata({STAMPS_KEY: json.dumps(stamps).encode()}), temp)


def embedded_ids(directory: Path) -> set[str]:
    """Every item id that already has an embedding in this model/dataset directory (in a readable shard; a
    damaged one is set aside and its rows count as not embedded, so the next embed run embeds them again)."""
    cache = cache_path(directory)
    cached_stamps, cached_ids = _read_cache(cache)
    stamps: dict[str, list[int]] = {}
    ids: dict[str, list[str]] = {}
    for path in shard_paths(directory):
        info = path.stat()
        stamp = [info.st_size, info.st_mtime_ns]
        if cached_stamps.get(path.name) == stamp:
            ids[path.name] = cached_ids[path.name]
        else:
            found = skip_damaged(path, open_shard_ids)
            if found is None:
                continue
            ids[path.name] = found
        stamps[path.name] = stamp
    if cache is not None and stamps != cached_stamps:
        _write_cache(cache, stamps, ids)
    return {item_id for found in ids.values() for item_id in found}
