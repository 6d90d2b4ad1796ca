"""soxr runs in many threads at once without a lock (``processors/resample.py``): every sample resampled
concurrently must equal the same conversion made alone, and clips written concurrently must equal clips
written one at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf
import soxr

from processors.clip import write_clip
from processors.decode import Audio
from processors.resample import QUALITY, resample, resample_blocks
from store.settings import Settings

THREADS = 8
T = TypeVar("T")
RATES = (8_000, 16_000, 22_050, 32_000, 48_000, 96_000)
"""Sources at these rates, each converted to 44.1 kHz: up- and down-sampling by small and large ratios, so the
threads run converters of different stages and filter lengths at once."""


def signal(index: int, rate: int, channels: int, seconds: float = 1.5) -> np.ndarray:
    """float32 ``[frames, channels]`` noise plus a tone, different for every index."""
    rng = np.random.default_rng(index)
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 10 * index) * t)
    return (tone[:, None] + 0.1 * rng.standard_normal((len(t), channels))).astype(np.float32)


def streamed(samples: np.ndarray, rate: int) -> np.ndarray:
    """``samples`` at 44.1 kHz through :func:`resample_blocks`, fed in uneven blocks."""
    edges = [0, 1000, 7919, len(samples) // 2, len(samples)]
    blocks = (samples[a:b] for a, b in pairwise(edges))
    return np.concatenate(list(resample_blocks(blocks, rate, 44_100, samples.shape[1])))


def whole(samples: np.ndarray, rate: int) -> np.ndarray:
    return resample(Audio(np.ascontiguousarray(samples.T), rate), 44_100).samples


def all_at_once(jobs: list[Callable[[], T]]) -> list[T]:
    """Run ``jobs`` on ``THREADS`` threads that start together, so the conversions overlap; results in order."""
    start = threading.Barrier(THREADS)

    def share(first: int) -> list[T]:
        start.wait(timeout=30)
        return [job() for job in jobs[first::THREADS]]

    with ThreadPoolExecutor(THREADS) as pool:
        shares = [f.result() for f in [pool.submit(share, first) for first in range(THREADS)]]
    return [shares[index % THREADS][index // THREADS] for index in range(len(jobs))]


def test_converters_run_on_the_core_whose_state_is_their_own() -> None:
    """Running without a lock is safe for libsoxr's single-precision SIMD core ("cr32s") only, see
    ``processors/resample.py``: a ``QUALITY`` that picks another ("VHQ": "cr64s") needs the lock back."""
    for rate in RATES:
        for channels in (1, 2):
            stream = soxr.ResampleStream(rate, 44_100, channels, dtype="float32", quality=QUALITY)
            assert stream._csoxr.engine() == "cr32s", (rate, channels)


def test_concurrent_resampling_equals_serial_resampling_sample_for_sample() -> None:
    cases = [(index, rate, channels) for index, rate in enumerate(RATES * 3) for channels in (1, 2)]
    jobs = [
        (lambda i=i, r=r, c=c, convert=convert: convert(signal(i, r, c), r))
        for i, r, c in cases for convert in (streamed, whole)
    ]
    expected = [job() for job in jobs]
    for _ in range(3):
        for got, want in zip(all_at_once(jobs), expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_clips_written_concurrently_equal_clips_written_one_at_a_time(tmp_path: Path) -> None:
    sources = []
    for index, rate in enumerate(RATES * 2):
        path = tmp_path / f"source-{index}.wav"
        sf.write(path, signal(index, rate, 2, seconds=3.0), rate, subtype="PCM_24")
        sources.append(path)

    def clip(source: Path, folder: str) -> bytes:
        target = tmp_path / folder / f"{source.stem}.flac"
        write_clip(source, target, start_s=0.5, end_s=2.5, settings=Settings(root=tmp_path))
        return target.read_bytes()

    alone = [clip(source, "serial") for source in sources]
    together = all_at_once([lambda s=s: clip(s, "threads") for s in sources])
    assert together == alone
