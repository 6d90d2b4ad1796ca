"""The compacted status index (store/status.py): the latest record of every item survives compaction, concurrent
writers and readers, a damaged index and a compaction killed at any point."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kill import run_until

from store.layout import DataRoot
from store.status import (
    INDEX_PREFIX,
    UNIT_PREFIX,
    FailureClass,
    StatusRecord,
    compact,
    read_status,
    seen,
    write_status,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _unit(directory: Path, name: str, records: list[StatusRecord]) -> None:
    write_status(directory, f"{UNIT_PREFIX}{name}", records, "test")


def _ok(item: str, minute: int) -> StatusRecord:
    return StatusRecord(item, "preprocess", "ok", finished_at=AT + timedelta(minutes=minute))


def _failed(item: str, minute: int, failure_class: FailureClass = FailureClass.PERMANENT) -> StatusRecord:
    return StatusRecord(item, "preprocess", "failed", failure_class, "undecodable", "bad bytes",
                        finished_at=AT + timedelta(minutes=minute))


def _files(directory: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(prefix))


def _status_dir(tmp_path: Path) -> Path:
    return DataRoot(tmp_path).status_dir("preprocess", "d")


def test_compaction_keeps_the_latest_record_of_every_item(tmp_path: Path) -> None:
    directory = _status_dir(tmp_path)
    _unit(directory, "a", [_failed("d:1", 0), _ok("d:2", 0), _failed("d:3", 5, FailureClass.TRANSIENT)])
    _unit(directory, "b", [_ok("d:1", 3), _failed("d:2", 4)])
    _unit(directory, "c", [_ok("d:3", 1)])  # older than the failure of unit a: the failure stays latest
    before = read_status(directory)
    assert compact(directory, after=4) is None, "fewer unit files than asked for: nothing to fold"
    index = compact(directory, after=3)
    assert index is not None and len(_files(directory, UNIT_PREFIX)) == 3, "kept until a second index covers them"
    assert read_status(directory) == before
    assert before["d:1"].is_ok and not before["d:2"].is_ok and before["d:3"].failure_class == "transient"
    records = seen(directory)
    assert records.ok == {"d:1"} and records.permanent == {"d:2"}

    _unit(directory, "d", [_ok("d:2", 9), _ok("d:4", 9)])
    second = compact(directory, after=1)
    assert second is not None and _files(directory, INDEX_PREFIX) == [index.name, second.name]
    assert [name.split("-")[1] for name in _files(directory, UNIT_PREFIX)] == ["d"]
    assert seen(directory).ok == {"d:1", "d:2", "d:4"}
    _unit(directory, "e", [_ok("d:5", 9)])
    compact(directory, after=1)
    assert len(_files(directory, INDEX_PREFIX)) == 2, "only the newest index and its fallback are kept"
    assert seen(directory).ok == {"d:1", "d:2", "d:4", "d:5"}


def test_a_damaged_newest_index_falls_back_to_the_one_before(tmp_path: Path) -> None:
    directory = _status_dir(tmp_path)
    for unit in range(3):
        _unit(directory, f"a{unit}", [_ok(f"d:{unit}", unit)])
    compact(directory, after=1)
    _unit(directory, "b", [_failed("d:0", 9), _ok("d:7", 9)])
    newest = compact(directory, after=1)
    expected = read_status(directory)
    newest.write_bytes(newest.read_bytes()[:200])  # torn: a disk that lost the end of the file
    assert read_status(directory) == expected
    assert not newest.exists() and list((tmp_path / "quarantine").rglob(f"{newest.name}*"))


def _writer(directory: str, writer: int, units: int) -> None:
    for unit in range(units):
        items = [f"d:{writer}-{unit}-{i}" for i in range(5)]
        write_status(Path(directory), f"{UNIT_PREFIX}{writer}-{unit:04d}", [StatusRecord.ok(i, "x") for i in items],
                     "test")


def _compactor(directory: str, rounds: int) -> None:
    for _ in range(rounds):
        compact(Path(directory), after=1)


def test_concurrent_writers_readers_and_compactions_lose_no_record(tmp_path: Path) -> None:
    """Two processes write unit files while two others compact the same folder over and over; a reader in this
    process never sees fewer records than a read before it (a record once readable stays readable)."""
    directory = _status_dir(tmp_path)
    directory.mkdir(parents=True)
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_writer, args=(str(directory), w, 120)) for w in range(2)]
    workers += [spawn.Process(target=_compactor, args=(str(directory), 40)) for _ in range(2)]
    for worker in workers:
        worker.start()
    counts = []
    while any(worker.is_alive() for worker in workers[:2]):
        counts.append(len(read_status(directory)))
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert counts == sorted(counts) and len(counts) > 3
    compact(directory, after=1)
    assert len(read_status(directory)) == 2 * 120 * 5
    assert not list((tmp_path / "quarantine").rglob("*")), "no file was taken for damaged"


COMPACT = "import sys; from pathlib import Path; from store.status import compact; compact(Path(sys.argv[1]), after=1)"
PAUSED = """
import sys, time
from pathlib import Path
import pyarrow.parquet as pq
from store.status import compact
write, unlink = pq.write_table, Path.unlink
def written(*args, **kwargs):  # the index is whole under its temporary name, not yet renamed
    write(*args, **kwargs)
    time.sleep(60)
def unlinked(self, *args, **kwargs):  # the index has its name; nothing is deleted yet
    time.sleep(60)
    return unlink(self, *args, **kwargs)
if sys.argv[2] == "writing the index":
    pq.write_table = written
else:
    Path.unlink = unlinked
compact(Path(sys.argv[1]), after=1)
"""
"""Compacts, pausing at one moment so that the SIGKILL lands there whatever the machine's load."""


@pytest.mark.parametrize("moment", ["writing the index", "after the index appeared"])
def test_a_compaction_killed_at_any_moment_loses_nothing(moment: str, tmp_path: Path) -> None:
    directory = _status_dir(tmp_path)
    _writer(str(directory), 0, 40)
    compact(directory, after=1)
    _writer(str(directory), 1, 300)
    expected = read_status(directory)
    indexes = _files(directory, INDEX_PREFIX)
    ready = {
        "writing the index": lambda: any(p.name.startswith(f".{INDEX_PREFIX}") for p in directory.iterdir()),
        "after the index appeared": lambda: _files(directory, INDEX_PREFIX) != indexes,
    }[moment]
    killed = run_until([sys.executable, "-c", PAUSED, str(directory), moment], dict(os.environ), ready, timeout=120)
    assert killed, f"the compaction never reached the moment: {moment}"
    assert read_status(directory) == expected
    finished = subprocess.run([sys.executable, "-c", COMPACT, str(directory)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert read_status(directory) == expected
    assert len(_files(directory, INDEX_PREFIX)) == 2
