"""Sample-rate conversion with soxr, shared by clip writing and the embedders' runtime."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import numpy as np
import soxr

from processors.decode import Audio

QUALITY = "HQ"
"""soxr's "HQ" quality is transparent for 16-bit output and fast."""
_SOXR = threading.Lock()
"""libsoxr is not safe to call from several threads at once (chirlu/soxr#10: crashes, fixed by a mutex);
work units run on a thread pool, so calls are serialised. Worker processes each have their own lock."""


def resample(audio: Audio, sample_rate: int) -> Audio:
    """``audio`` at ``sample_rate``, all at once."""
    if audio.sample_rate == sample_rate:
        return audio
    frames_first = np.ascontiguousarray(audio.samples.T)
    with _SOXR:
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
    with _SOXR:
        stream = soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality=QUALITY)
    for block in blocks:
        with _SOXR:
            converted = stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32))
        yield converted
    with _SOXR:
        tail = stream.resample_chunk(np.empty((0, channels), dtype=np.float32), last=True)
    yield tail
