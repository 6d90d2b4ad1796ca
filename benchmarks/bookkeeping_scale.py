"""How the bookkeeping grows with the corpus: a no-op ``musictext pipeline``, each planner, ``musictext status``.

Builds, for each size N, a *finished* corpus of the ``synthetic`` dataset through the store's own API and without
any audio: the manifest; the records every stage writes for finished items (acquire, preprocess, embed with
``dsp``, verify; a catalog records only rejected rows, so a finished one has none), one unit file per
``unit_size`` items as the flows write them; empty placeholder raw files and clips (the planners only ask whether
they exist, and verify compares a clip's mtime with its record); and one HDF5 shard of ``dsp``-sized random
vectors per unit. Then it measures, and prints, never asserts:

* ``musictext pipeline --dataset synthetic --model dsp`` as a subprocess, exactly what a user gets (embedded
  Prefect, ``PREFECT_API_URL`` unset): run 1 (verify reads every vector once and records the sound shards) and run
  2 (the steady-state no-op), wall time and peak RSS;
* checking the manifest (every row decoded, as the flows do before planning) and each planner, in a child process of
  its own: time and that process's peak RSS (the imports, a row group and a batch of rows, and the planner);
* ``musictext status``;

and the growth per 10× items between consecutive sizes. Run 1 is the first run after an upgrade (or with the stamps
of ``settled/`` deleted): it plans every stage in full, folds the records into compacted indexes and writes the
stamps; run 2 is what every later run with nothing new costs.

Why ``synthetic``: its catalog is a pure function of the seed and the limit, so on a finished corpus it is a
no-op with no network and no audio (run without ``--limit`` it lists its first 200 items, which the manifest
holds unchanged, and rows are never dropped). ``local`` would probe every file of a folder, and the public
sources read their metadata from the network. Only the first 200 rows are the source's own (a row costs ~0.6 ms
to compose); the rest share their captions and spec, under their own ids, splits and groups.

    .venv/bin/python benchmarks/bookkeeping_scale.py                       # 10 k and 100 k items
    .venv/bin/python benchmarks/bookkeeping_scale.py --sizes 10000 100000 1000000 --work /big/disk
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from downloaders import get_source
from downloaders.synthetic import DEFAULT_LIMIT, native_id, row_for, split_of
from embedders import embedder_spec, get_embedder
from embedders.runtime import shard_attributes
from flows.plan import Plan, chunks, plan_acquire, plan_embed, plan_preprocess, plan_verify
from store import __version__
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow, canonical_row, count_manifest, iter_manifest, write_manifest
from store.settings import load_settings
from store.shards import ShardAttributes, ShardWriter
from store.status import StatusRecord, unit_name, write_status

DATASET = "synthetic"
MODEL = "dsp"
MUSICTEXT = Path(sys.executable).with_name("musictext")
PLANNERS = ("count_manifest", "plan_acquire", "plan_preprocess", "plan_embed", "plan_verify")
LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as out:
    json.dump({"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, "code": os.waitstatus_to_exitcode(status)}, out)
"""
"""Runs a command and writes its wall time, peak RSS and exit code as JSON. A child's ``ru_maxrss`` starts from the
RSS of the process that spawned it (the memory it shared until ``exec``), so the command is spawned from this small
interpreter, not from the benchmark, which holds a whole corpus's rows by then."""


@dataclass
class Measured:
    """One measurement of one size: wall seconds and peak RSS in MiB (of the largest process, for a command)."""

    seconds: float
    peak_mib: float
    note: str = ""


def corpus_rows(size: int) -> list[ManifestRow]:
    """``size`` rows as the catalog writes them (:func:`canonical_row`): the source's own for the indexes its default
    catalog lists, so that catalog changes nothing, and beyond them copies of those rows under the ids, splits and
    groups the source would give."""
    own = [canonical_row(row_for(0, index)) for index in range(min(size, DEFAULT_LIMIT))]
    rows = list(own)
    for index in range(len(own), size):
        native = native_id(0, index)
        item_id = make_item_id(DATASET, native)
        rows.append(canonical_row(replace(own[index % len(own)], item_id=item_id, group=item_id,
                                          split=split_of(native), held_out=False,
                                          source=f"synthetic://seed=0/index={index}")))
    return rows


def _touch(paths: Sequence[Path]) -> None:
    for directory in {path.parent for path in paths}:
        directory.mkdir(parents=True, exist_ok=True)
    for path in paths:
        path.touch()


def _records(stage: str, unit: Sequence[ManifestRow], outputs: Sequence[str | None]) -> list[StatusRecord]:
    return [StatusRecord.ok(row.item_id, stage, output=output, duration_s=row.end_s - row.start_s)
            for row, output in zip(unit, outputs, strict=True)]


def _shard(root: DataRoot, unit: Sequence[ManifestRow], attrs: ShardAttributes, rng: np.random.Generator) -> str | None:
    """One shard of the unit's ``dsp`` vectors (random, unit length), as ``embed_unit`` writes it."""
    vectors = rng.standard_normal((len(unit), attrs.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with ShardWriter(root.shard_dir(MODEL, DATASET, attrs.space), attrs) as writer:
        writer.append([row.item_id for row in unit], vectors)
    return os.path.relpath(writer.path, root.path) if writer.path else None


def build_corpus(path: Path, size: int) -> None:
    """A finished corpus of ``size`` items under ``path``: what a pipeline run that did everything leaves."""
    root = DataRoot(path)
    rows = corpus_rows(size)
    write_manifest(root.manifest(DATASET), rows)
    source = get_source(DATASET)
    raw = [source.audio_path(row, root) for row in rows]
    clips = [root.clip_path(DATASET, row.item_id) for row in rows]
    _touch(raw)
    _touch(clips)
    attrs = shard_attributes(get_embedder(MODEL))
    rng = np.random.default_rng(0)
    unit_size = load_settings(root=str(path)).unit_size
    for unit in chunks(rows, unit_size):
        ids = [row.item_id for row in unit]
        name = unit_name(ids)
        write_status(root.status_dir("acquire", DATASET), name,
                     _records("acquire", unit, [os.path.relpath(source.audio_path(r, root), path) for r in unit]),
                     __version__)
        write_status(root.status_dir("preprocess", DATASET), name,
                     _records("preprocess", unit, [os.path.relpath(root.clip_path(DATASET, i), path) for i in ids]),
                     __version__)
        shard = _shard(root, unit, attrs, rng)
        write_status(root.embed_status_dir(MODEL, DATASET, attrs.space), name,
                     _records("embed", unit, [shard] * len(unit)), __version__)
    for unit in chunks(rows, unit_size):  # after every clip exists: a record older than its clip is redone
        write_status(root.status_dir("verify", DATASET), unit_name(r.item_id for r in unit),
                     _records("verify", unit, [None] * len(unit)), __version__)


def _planner(name: str, root: DataRoot) -> Callable[[Iterable[ManifestRow]], Plan | None]:
    space = embedder_spec(MODEL).space
    return {
        "count_manifest": lambda rows: None,
        "plan_acquire": lambda rows: plan_acquire(rows, root, get_source(DATASET), force=False),
        "plan_preprocess": lambda rows: plan_preprocess(rows, root, DATASET, force=False),
        "plan_embed": lambda rows: plan_embed(rows, root, DATASET, MODEL, space, force=False),
        "plan_verify": lambda rows: plan_verify(rows, root, DATASET),
    }[name]


def measure_planner(path: Path, name: str) -> dict[str, float | int | str]:
    """In this (child) process: ``name``'s seconds (decoding and checking every row of the manifest for
    ``count_manifest``, as the flows do first; the plan for the others, given the rows a batch at a time from the file
    as the flows give them) and the process's peak RSS; what is left to do, which must be nothing."""
    root = DataRoot(path)
    planner = _planner(name, root)
    started = time.perf_counter()
    count_manifest(root.manifest(DATASET))
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    plan = planner(iter_manifest(root.manifest(DATASET)))
    plan_s = time.perf_counter() - started
    left = "" if plan is None else f"todo {len(plan.todo)}, adopt {len(plan.adopt)}, done {plan.done}"
    return {"seconds": read_s if plan is None else plan_s, "peak_mib": _own_peak_mib(), "note": left}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _own_peak_mib() -> float:
    """This process's peak RSS since its ``exec`` (``VmHWM``); ``ru_maxrss`` would include its spawner's."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    peak = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
    return peak[0] / 1024 if peak else _peak_mib()


def run_planner(path: Path, name: str) -> Measured:
    """:func:`measure_planner` in a fresh interpreter, so each peak RSS is that planner's alone."""
    done = subprocess.run([sys.executable, __file__, "--planner", name, str(path)], capture_output=True, text=True,
                          check=True)
    return Measured(**json.loads(done.stdout.splitlines()[-1]))


def run_command(args: list[str]) -> tuple[Measured, str]:
    """``musictext ARGS`` as a user runs it with no server configured: wall time, the peak RSS of its largest
    process (through :data:`LAUNCHER`), and its output."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryFile("w+") as output:
        report = Path(scratch) / "measured.json"
        subprocess.run([sys.executable, "-c", LAUNCHER, str(report), str(MUSICTEXT), *args], stdout=output,
                       stderr=subprocess.STDOUT, env=env, check=True)
        output.seek(0)
        text = output.read()
        measured = json.loads(report.read_text())
    note = "" if measured["code"] == 0 else f"exit {measured['code']}"
    return Measured(measured["seconds"], measured["peak_mib"], note), text


def worked(text: str) -> str:
    """The pipeline's own summary of work done ("worked" column), so a corpus that is not finished shows."""
    rows = [line.split("│") for line in text.splitlines() if line.count("│") >= 9]
    counts = [f"{cells[2].strip()} {cells[5].strip()}" for cells in rows if cells[5].strip().isdigit()]
    busy = [count for count in counts if not count.endswith(" 0")]
    return "nothing worked" if counts and not busy else f"worked: {', '.join(busy) or 'summary not found'}"


def measure_size(path: Path, size: int, console: Console) -> dict[str, Measured]:
    """Build the corpus of ``size`` items at ``path``, then take every measurement of it."""
    started = time.perf_counter()
    build_corpus(path, size)
    results = {"build corpus (store API)": Measured(time.perf_counter() - started, _peak_mib())}
    console.print(f"{size:,} items: corpus built in {results['build corpus (store API)'].seconds:.1f} s")
    pipeline = ["pipeline", "--dataset", DATASET, "--model", MODEL, "--root", str(path)]
    for run in (1, 2):
        measured, text = run_command(pipeline)
        measured.note = " ".join(filter(None, (measured.note, worked(text))))
        results[f"pipeline no-op, run {run}"] = measured
        console.print(f"{size:,} items: pipeline run {run} {measured.seconds:.1f} s ({measured.note})")
    results["musictext status"], _ = run_command(["status", "--root", str(path)])
    for name in PLANNERS:
        results[name] = run_planner(path, name)
    return results


def growth(before: float, after: float, sizes: tuple[int, int]) -> str:
    """Factor per 10× items between two sizes: 10 is linear, 1 is flat."""
    decades = math.log10(sizes[1] / sizes[0])
    return f"×{(after / before) ** (1 / decades):.1f}" if before > 0 and decades > 0 else "—"


def print_table(console: Console, sizes: list[int], results: dict[int, dict[str, Measured]]) -> None:
    table = Table(title="Bookkeeping of a finished corpus (seconds, peak RSS MiB)")
    table.add_column("measurement")
    for size in sizes:
        table.add_column(f"{size:,} items", justify="right")
    for before, after in zip(sizes, sizes[1:], strict=False):
        table.add_column(f"growth per 10× ({before:,}→{after:,})", justify="right")
    table.add_column("notes (largest size)")
    for name in results[sizes[0]]:
        cells = [f"{results[s][name].seconds:.2f} s, {results[s][name].peak_mib:,.0f} MiB" for s in sizes]
        growths = [f"{growth(results[a][name].seconds, results[b][name].seconds, (a, b))} s, "
                   f"{growth(results[a][name].peak_mib, results[b][name].peak_mib, (a, b))} RSS"
                   for a, b in zip(sizes, sizes[1:], strict=False)]
        table.add_row(name, *cells, *growths, results[sizes[-1]][name].note)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="corpus sizes, in items")
    parser.add_argument("--work", type=Path, help="where to build the corpora (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora after measuring")
    parser.add_argument("--planner", nargs=2, metavar=("NAME", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.planner:
        print(json.dumps(measure_planner(Path(args.planner[1]), args.planner[0])))
        return
    console = Console(width=200)
    work = args.work or Path(tempfile.mkdtemp(prefix="musictext-bookkeeping-"))
    sizes = sorted(args.sizes)
    results = {}
    try:
        for size in sizes:
            results[size] = measure_size(work / f"n{size}", size, console)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(console, sizes, results)


if __name__ == "__main__":
    main()
