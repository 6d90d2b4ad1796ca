"""Measure what the YouTube-sourced datasets end with under transient faults, against a clean run.

Runs the real ``ingest`` flow (catalog + acquire) of MusicCaps (every row), AudioSet (every split) and
MSD with ``audio=youtube`` (search + download) against the loopback mirror: once with no faults, then, per
seed, on a fresh data root with ``rate`` of all requests failing (500, 503, 429 with Retry-After, bodies
cut at a random point, stalls past the read timeout; the reads of the segments' own bytes included),
counting the acquired items after the first and the second run. An item counts only if its file decodes to
the length it must have (the row's span; MSD: the first 30 s), once; leftover temporary files and
permanent failures the clean run does not have are reported too.

    .venv/bin/python tests/measure_youtube_faults.py [--rate 0.3] [--seeds 1 2 3]

Not a test (it takes minutes); ``tests/test_musiccaps.py``, ``tests/test_audioset.py`` and
``tests/test_msd.py`` check the same at a smaller scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from mirror import ALL_KINDS, Faults, MirrorServer  # noqa: E402
from published import audioset as published_audioset  # noqa: E402
from published import msd as published_msd  # noqa: E402
from published import musiccaps as published_musiccaps  # noqa: E402
from published._youtube import timecode_webm  # noqa: E402

import flows  # noqa: E402,F401  (Prefect's offline defaults)
from downloaders import get_source  # noqa: E402
from downloaders.formats.msd import youtube_query  # noqa: E402
from downloaders.msd import YOUTUBE_SECONDS  # noqa: E402
from downloaders.transports.youtube import segment_seconds  # noqa: E402
from processors.errors import AudioError  # noqa: E402
from store.layout import DataRoot  # noqa: E402
from store.manifest import read_manifest  # noqa: E402
from store.status import read_status  # noqa: E402
from verification.audio import DURATION_TOLERANCE_S  # noqa: E402

DATASETS = {"musiccaps": {}, "audioset": {"split": "balanced,unbalanced,eval"}, "msd": {"audio": "youtube"}}
MSD_TRACKS = 12


@dataclass
class Outcome:
    items: set[str]
    """Acquired items whose file has the length it must have."""
    bad_files: list[str]
    permanent: dict[str, str]
    leftovers: list[str]
    files: int
    """Media files in the dataset's raw folder: one per acquired item, no duplicates."""
    failures: Counter[str]
    """Failed acquire records by reason (``~`` marks a transient one)."""


def serve(mirror: MirrorServer) -> dict[str, str]:
    """Every YouTube-sourced dataset on the mirror; returns the extra host keys."""
    published_musiccaps.register(mirror, published_musiccaps.build())
    hosts = published_audioset.register(mirror, published_audioset.build())
    copy = published_msd.build()
    hosts |= published_msd.serve(mirror, copy)
    for index, song in enumerate(copy.songs[:MSD_TRACKS]):
        video = f"msd{index:02d}{song.track_id[-6:]}"
        if index % 6 == 5:
            mirror.search(youtube_query(song.artist, song.title), [])
            continue
        mirror.search(youtube_query(song.artist, song.title), [video, "Zzzzzzzzzzz"])
        mirror.media(video, timecode_webm())
    return hosts


@contextmanager
def environment(mirror: MirrorServer, hosts: dict[str, str], root: Path) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(mirror.environment())
    os.environ.update({
        "MUSICTEXT_MIRRORS": json.dumps({**json.loads(os.environ["MUSICTEXT_MIRRORS"]), **hosts}),
        "MUSICTEXT_ROOT": str(root), "MUSICTEXT_CONFIG": os.devnull, "MUSICTEXT_HTTP_TIMEOUT_S": "1",
        "MUSICTEXT_HTTP_BACKOFF_S": "0.05", "MUSICTEXT_HTTP_BACKOFF_MAX_S": "0.5",
    })
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def expected_s(dataset: str, row) -> float:
    return YOUTUBE_SECONDS if dataset == "msd" else row.end_s - row.start_s


def outcome(root: DataRoot, dataset: str) -> Outcome:
    source = get_source(dataset)
    records = read_status(root.status_dir("acquire", dataset))
    items, bad = set(), []
    for row in read_manifest(root.manifest(dataset)):
        record = records.get(row.item_id)
        if record is None or not record.is_ok:
            continue
        path = source.audio_path(row, root)
        try:
            length = segment_seconds(path) if path.is_file() else 0.0
        except AudioError:
            length = 0.0
        if abs(length - expected_s(dataset, row)) <= DURATION_TOLERANCE_S:
            items.add(row.item_id)
        else:
            bad.append(f"{row.item_id} ({length:.2f} s)")
    permanent = {item_id: record.reason or "" for item_id, record in records.items()
                 if record.is_permanent_failure}
    leftovers = [p.name for p in root.path.rglob("*") if ".part" in p.name or p.name.endswith((".tmp", ".ytdl"))]
    folder = root.raw_dir(dataset) / ("audio" if dataset == "msd" else "")
    files = sum(p.suffix in (".webm", ".m4a", ".opus", ".mp4") for p in folder.iterdir()) if folder.is_dir() else 0
    failures = Counter(("" if record.is_permanent_failure else "~") + (record.reason or "")
                       for record in records.values() if not record.is_ok)
    return Outcome(items, bad, permanent, leftovers, files, failures)


def ingest(dataset: str) -> None:
    from flows import stages

    limit = MSD_TRACKS if dataset == "msd" else None
    stages.ingest(dataset, DATASETS[dataset], limit=limit, root=os.environ["MUSICTEXT_ROOT"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    lines = ["| dataset | seed | clean run | after run 1 | after run 2 | faults injected | media files | bad files "
             "| extra permanent | leftovers | failures after run 2 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    with prefect_test_harness(server_startup_timeout=90), MirrorServer() as mirror, \
            tempfile.TemporaryDirectory() as scratch:
        hosts = serve(mirror)
        for dataset in DATASETS:
            clean_root = Path(scratch) / f"{dataset}-clean"
            with environment(mirror, hosts, clean_root):
                mirror.faults = Faults()
                ingest(dataset)
            clean = outcome(DataRoot(clean_root), dataset)
            for seed in args.seeds:
                root = Path(scratch) / f"{dataset}-{seed}"
                mirror.faults = Faults(rate=args.rate, seed=seed, kinds=ALL_KINDS, cut=None, stall_s=1.5,
                                       retry_after_s=0.2)
                counts = []
                with environment(mirror, hosts, root):
                    for _ in range(2):
                        ingest(dataset)
                        counts.append(outcome(DataRoot(root), dataset))
                last = counts[-1]
                extra = {k: v for k, v in last.permanent.items() if k not in clean.permanent}
                cells = [f"{len(c.items & clean.items)}/{len(clean.items)}"
                         + (f" (+{len(c.items - clean.items)})" if c.items - clean.items else "") for c in counts]
                lines.append(f"| {dataset} | {seed} | {len(clean.items)} | {cells[0]} | {cells[1]} | "
                             f"{mirror.faults.injected} | {last.files} | {len(last.bad_files)} | {extra or 0} | "
                             f"{len(last.leftovers)} | {dict(last.failures)} |")
                print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
