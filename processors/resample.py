"""Sample-rate conversion with soxr, shared by clip writing and the embedders' runtime.

Calls run concurrently, without a lock: work units run on a thread pool, and soxr releases the GIL while it
resamples, so the threads resample on every core at once. That is safe for the converters made here, and only
for them: libsoxr keeps all of a converter's state (filters, FFT setups, buffers) in the converter itself, except
for one process-wide FFT cache with no lock in python-soxr's build (no OpenMP), which only double-precision
converters (precision above 20 bits: "VHQ") and non-linear-phase filters use, and which made ffmpeg's threads
crash (chirlu/soxr#10). ``QUALITY`` is single-precision (20 bits) and linear-phase, which libsoxr runs on its SIMD
core with a per-converter pffft setup. ``tests/test_resample_threads.py`` resamples in many threads at once and
compares every sample with a serial run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import soxr

from processors.decode import Audio

QUALITY = "HQ"
"""soxr's "HQ" quality is transparent for 16-bit output and fast. Keep it single-precision and linear-phase
(see the module docstring): "VHQ" would reach libsoxr's unlocked shared FFT cache from several threads."""


def resample(audio: Audio, sample_rate: int) -> Audio:
    """``audio`` at ``sample_rate``, all at once."""
    if audio.sample_rate == sample_rate:
        return audio
    frames_first = np.ascontiguousarray(audio.samples.T)
    converted = soxr.resample(frames_first, audio.sample_rate, sample_rate, quality=QUALITY)
    return Audio(np.ascontiguousarray(converted.T, dtype=np.float32), sample_rate)


def resample_blocks(
    blocks: Iterable[np.ndarray], from_rate: int, to_rate: int, channels: int
) -> Iterator[np.ndarray]:
    """float32 ``[frames, channels]`` blocks of one continuous signal, at ``to_rate``, block by block.

    soxr's streaming resampler carries its filter state across blocks, so a whole track converts in memory
    bounded by the block size and gives what :func:`resample` gives for the same audio in one piece.
    """
    if from_rate == to_rate:
        yield from blocks
        return
    stream = soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality=QUALITY)
    for block in blocks:
        yield stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32))
    yield stream.resample_chunk(np.empty((0, channels), dtype=np.float32), last=True)
