"""Time the ``musictext preprocess`` command against the ``ffmpeg`` CLI run ``--jobs`` files at a time.

Generates N stereo 48 kHz 24-bit WAV files of S seconds (``clip_vs_ffmpeg.make_sources``), catalogues and
acquires them as the ``local`` dataset of a fresh data root (untimed), then times:

* ``musictext preprocess local``, the command a user runs (no Prefect server: the embedded one, as a user
  without a server gets), with ``MUSICTEXT_WORKERS`` = ``--jobs`` and the default ``unit_size``;
* the same command again, with nothing left to do: its start-up (interpreter, imports, Prefect, planning);
* ``ffmpeg -ss <start> -t <length> -i <file> -ar 44100 -sample_fmt s16 -c:a flac``, ``--jobs`` processes at a
  time, over each item's span as the manifest records it (source channels, 16-bit FLAC).

Each is run ``--repeat`` times (the clips and preprocess records are deleted before each preprocess run) and
the fastest run counts, so that other programs on the machine disturb the figures less. Prints both times, the
work alone (the first run less the start-up), ffmpeg's time divided by each (above 1: musictext is faster), and
the CPU seconds each used (children's user + system), which show what the wall times cost on a busy machine.

    python benchmarks/preprocess_vs_ffmpeg.py --files 40 --seconds 30 --jobs 2 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from clip_vs_ffmpeg import make_sources

from store.layout import DataRoot
from store.manifest import ManifestRow, read_manifest

MUSICTEXT = str(Path(sys.executable).with_name("musictext"))


def environment(root: Path, jobs: int) -> dict[str, str]:
    """A user's shell without a server or a config file, its data root and Prefect home in the scratch folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTEXT_", "PREFECT_"))}
    return env | {"MUSICTEXT_CONFIG": os.devnull, "MUSICTEXT_ROOT": str(root / "data"),
                  "MUSICTEXT_WORKERS": str(jobs), "PREFECT_HOME": str(root / "prefect")}


Timing = tuple[float, float]
"""Wall seconds, and CPU seconds of the child processes."""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(work: Callable[[], object]) -> Timing:
    cpu, began = children_cpu(), time.perf_counter()
    work()
    return time.perf_counter() - began, children_cpu() - cpu


def command(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def ffmpeg_clip(row: ManifestRow, folder: Path, out: Path) -> None:
    span = ["-ss", f"{row.start_s or 0}"] + (["-t", f"{row.end_s - (row.start_s or 0)}"] if row.end_s else [])
    argv = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *span, "-i", str(folder / row.source),
            "-ar", "44100", "-sample_fmt", "s16", "-c:a", "flac", str(out / f"{Path(row.source).stem}.flac")]
    subprocess.run(argv, check=True, capture_output=True)


def ffmpeg_all(rows: list[ManifestRow], folder: Path, out: Path, jobs: int) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda row: ffmpeg_clip(row, folder, out), rows))


def forget_preprocessing(root: DataRoot) -> None:
    """Delete the clips and the preprocess records, so the next run does all the work again."""
    shutil.rmtree(root.clip_dir("local"), ignore_errors=True)
    shutil.rmtree(root.status_dir("preprocess", "local"), ignore_errors=True)


def mean_seconds(paths: list[Path]) -> float:
    """Mean duration of the clips written: a check that both made the same spans."""
    return float(np.mean([sf.info(path).duration for path in paths]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=40, help="number of source files")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each source file (one clip each "
                        "up to clip_s = 30 s)")
    parser.add_argument("--jobs", type=int, default=2, help="ffmpeg processes at once, and musictext workers")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="preprocess-bench-") as scratch:
        base = Path(scratch)
        folder = base / "music"
        folder.mkdir()
        make_sources(folder, args.files, args.seconds)
        env = environment(base, args.jobs)
        command([MUSICTEXT, "ingest", "local", "-o", f"path={folder}"], env)
        root = DataRoot(base / "data")
        rows = read_manifest(root.manifest("local"))
        preprocess = [MUSICTEXT, "preprocess", "local"]
        fulls, startups, ffmpegs = [], [], []
        for _ in range(args.repeat):
            forget_preprocessing(root)
            fulls.append(timed(lambda: command(preprocess, env)))
            startups.append(timed(lambda: command(preprocess, env)))
            ffmpegs.append(timed(lambda: ffmpeg_all(rows, folder, base / "ffmpeg", args.jobs)))
        ours = mean_seconds([root.clip_path("local", row.item_id) for row in rows])
        theirs = mean_seconds(sorted((base / "ffmpeg").glob("*.flac")))

    (full, full_cpu), (startup, startup_cpu), (ffmpeg, ffmpeg_cpu) = min(fulls), min(startups), min(ffmpegs)
    work = full - startup
    print(f"{len(rows)} items of {args.files} × {args.seconds:g} s 48 kHz stereo 24-bit WAV → 44.1 kHz 16-bit "
          f"FLAC, {args.jobs} at a time, fastest of {args.repeat} (mean clip: musictext {ours:.3f} s, ffmpeg "
          f"{theirs:.3f} s)")
    print(f"musictext preprocess: {full:.2f} s = start-up {startup:.2f} s + work {work:.2f} s "
          f"(CPU {full_cpu:.1f} s, of which start-up {startup_cpu:.1f} s)")
    print(f"ffmpeg, {args.jobs} at a time: {ffmpeg:.2f} s (CPU {ffmpeg_cpu:.1f} s)")
    print(f"ffmpeg / musictext: {ffmpeg / full:.2f}× with start-up, {ffmpeg / work:.2f}× for the work alone")


if __name__ == "__main__":
    main()
