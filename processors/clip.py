"""Canonical clips: one time range of a source file as 44.1 kHz (``settings.sample_rate``), at most two
channels, 16-bit FLAC, written atomically, after checks that reject audio no embedder should see.

A clip may be a whole track (``settings.clip_s = 0`` or ``settings.whole_tracks``, see :func:`catalog_spans`),
so it is made block by block (decode, fold channels, resample, write) and memory stays bounded by the block
size whatever the track's length. The checks that need all the audio (too short, silent) and the decoder's
truncation check judge only at the end of the stream, while the FLAC is still a temporary file: a rejected
track leaves nothing behind.

Where the acquired file is itself the item's segment (YouTube downloads only ``[start_s, end_s]``), the
clip must last the row's span, the same check ``verify`` makes later (``duration_mismatch``): one that does
not (or one the decoder finds empty, cut short or undecodable) is refused before it can be embedded, and
since such a file is an incomplete download, it is deleted so the acquire stage (which fetches missing
files) downloads it again: a transient failure, not a lost item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from processors.channels import at_most_stereo, stereo_channels
from processors.decode import Audio, open_audio
from processors.errors import AudioError
from processors.resample import resample_blocks
from store.atomic import atomic_path
from store.manifest import ManifestRow
from store.settings import Settings
from store.status import FailureClass

BLOCK_S = 30.0
"""Seconds of source audio decoded, resampled and written at a time (about 10 MiB of stereo float32 at
44.1 kHz): big enough that per-block overhead vanishes, small enough that a long track needs little memory."""

INCOMPLETE = frozenset({"empty", "truncated", "undecodable"})
"""What the decoder says of a file that broke off: for a downloaded segment, a reason to fetch it again."""

Span = tuple[float | None, float | None]
"""``(start_s, end_s)`` of one catalogue item within its file; ``(None, None)`` is the whole file."""
WHOLE_FILE: Span = (None, None)


@dataclass(frozen=True)
class ClipInfo:
    duration_s: float
    channels: int
    source_sample_rate: int
    peak_dbfs: float
    """Peak level of the written clip, in dB relative to full scale."""


def windows(duration_s: float, clip_s: float, hop_s: float, min_s: float) -> list[tuple[float, float]]:
    """``(start, end)`` windows of ``clip_s`` every ``hop_s`` covering ``[0, duration_s]``.

    The windows stop at the first one that reaches the end, so with ``hop_s < clip_s`` no window is a
    subset of the one before. The last window is whatever remains: it is kept when at least ``min_s``
    long (clips are "at most ``clip_s``"; a short tail is still music worth keeping), else dropped.
    """
    if clip_s <= 0 or hop_s <= 0:
        raise ValueError(f"clip_s and hop_s must be positive, not {clip_s} and {hop_s}")
    result = []
    step = 0
    while (start := round(step * hop_s, 6)) < duration_s:
        end = round(min(start + clip_s, duration_s), 6)
        if end - start >= min_s:
            result.append((start, end))
        if end >= duration_s:
            break
        step += 1
    return result


def catalog_spans(
    dataset: str, duration_s: float | None, settings: Settings, *, whole_if_short: bool = False
) -> list[Span]:
    """The ``(start_s, end_s)`` items to catalogue for one file of ``dataset`` lasting ``duration_s``.

    The whole file when ``settings`` ask for whole tracks of this dataset (Navidrome embeds whole tracks),
    when the duration is unknown (preprocess then records why the file is unusable), or when the file fits
    in one clip and the source gives such files whole (``whole_if_short``); otherwise the
    :func:`windows` of ``settings.clip_s``, or the whole file when none is long enough.
    """
    if settings.wants_whole_tracks(dataset) or duration_s is None:
        return [WHOLE_FILE]
    if whole_if_short and duration_s <= settings.clip_s:
        return [WHOLE_FILE]
    return windows(duration_s, settings.clip_s, settings.clip_hop_s, settings.min_clip_s) or [WHOLE_FILE]


def check_audio(audio: Audio, source: Path, *, min_s: float, silence_dbfs: float, where: str = "") -> None:
    """Raise ``AudioError`` for audio that would make a useless or harmful clip.

    ``where`` names the range (e.g. `` between 30 s and 60 s``) so the message points at the right part.
    """
    checks = AudioChecks(source, audio.sample_rate, min_s=min_s, silence_dbfs=silence_dbfs, where=where)
    checks.see(audio.samples.T)
    checks.finish()


class AudioChecks:
    """:func:`check_audio` on audio that arrives block by block: a block with NaN or infinite values is
    rejected at once; emptiness, length and silence are judged by :meth:`finish` on the totals."""

    def __init__(self, source: Path, sample_rate: int, *, min_s: float, silence_dbfs: float, where: str = "",
                 segment: SegmentLength | None = None) -> None:
        self.source, self.sample_rate, self.where = source, sample_rate, where
        self.min_s, self.silence_dbfs, self.segment = min_s, silence_dbfs, segment
        self.frames = 0
        self.peak = 0.0

    def see(self, block: np.ndarray) -> None:
        """Count one float ``[frames, channels]`` block."""
        if not np.isfinite(block).all():
            raise AudioError(
                "non_finite",
                f"{self.source} contains NaN or infinite sample values{self.where} (a broken float export?); "
                "re-export it.",
            )
        self.frames += len(block)
        self.peak = max(self.peak, _block_peak(block))

    def passing(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``blocks`` unchanged, each seen on its way through, and :meth:`finish` after the last."""
        for block in blocks:
            self.see(block)
            yield block
        self.finish()

    def finish(self) -> None:
        """Judge the audio seen so far as complete: a segment of the wrong length (first: a cut-off download
        is no reason to give up on the item), empty, too short or silent raise ``AudioError``."""
        duration_s = self.frames / self.sample_rate
        if self.segment is not None and abs(duration_s - self.segment.seconds) > self.segment.tolerance_s:
            raise _incomplete(self.source, self.segment, f"holds {duration_s:.3f} s of audio")
        if self.frames == 0:
            raise AudioError(
                "empty", f"{self.source} decoded to no audio{self.where}; replace it or fix the clip times."
            )
        if duration_s < self.min_s:
            raise AudioError(
                "too_short",
                f"{self.source} gives only {duration_s:.2f} s of audio{self.where}, "
                f"less than the {self.min_s:g} s minimum (setting min_clip_s).",
            )
        level = _dbfs(self.peak)
        if level < self.silence_dbfs:
            shown = "-inf" if math.isinf(level) else f"{level:.1f}"
            raise AudioError(
                "silent",
                f"{self.source} is silent{self.where}: its peak is {shown} dBFS, below the {self.silence_dbfs:g} "
                "dBFS threshold (setting silence_dbfs); check that the file holds the intended recording.",
            )


@dataclass(frozen=True)
class SegmentLength:
    """How long a source file that is itself the item's segment must last, and the leeway."""

    seconds: float
    tolerance_s: float


def segment_length(row: ManifestRow, clip_range: Span, tolerance_s: float) -> SegmentLength | None:
    """The length the whole acquired file must have when it is the row's segment (the source clips the
    whole file, yet the row has a span); ``None`` for every other row."""
    if clip_range != WHOLE_FILE or row.start_s is None or row.end_s is None:
        return None
    return SegmentLength(row.end_s - row.start_s, tolerance_s)


def write_clip(
    source: Path, target: Path, *, start_s: float | None, end_s: float | None, settings: Settings,
    segment: SegmentLength | None = None,
) -> ClipInfo:
    """Decode ``[start_s, end_s]`` of ``source`` (all of it when ``None``), check it and write ``target``,
    ``BLOCK_S`` at a time so that a whole track needs no more memory than a short clip.

    ``segment``: ``source`` is a downloaded segment that must last this long; one that does not is deleted
    and refused as a transient ``duration_mismatch`` (see the module docstring).
    Raises ``AudioError``; ``target`` is either the complete clip or untouched, never partial.
    """
    try:
        with open_audio(source, start_s, end_s, block_s=BLOCK_S) as stream:
            checks = AudioChecks(source, stream.sample_rate, min_s=settings.min_clip_s,
                                 silence_dbfs=settings.silence_dbfs, where=_range_text(start_s, end_s),
                                 segment=segment)
            folded = (np.ascontiguousarray(at_most_stereo(block.T).T) for block in checks.passing(stream.blocks))
            channels = stereo_channels(stream.channels)
            canonical = resample_blocks(folded, stream.sample_rate, settings.sample_rate, channels)
            frames, peak = _write_flac(target, canonical, settings.sample_rate, channels)
    except AudioError as error:
        if segment is None or error.reason not in INCOMPLETE:
            raise
        raise _incomplete(source, segment, f"cannot be used ({error.detail})") from None
    return ClipInfo(
        duration_s=frames / settings.sample_rate,
        channels=channels,
        source_sample_rate=stream.sample_rate,
        peak_dbfs=_dbfs(peak),
    )


def _incomplete(source: Path, segment: SegmentLength, found: str) -> AudioError:
    """A downloaded segment of the wrong length, deleted so that the acquire stage downloads it again."""
    source.unlink(missing_ok=True)
    return AudioError(
        "duration_mismatch",
        f"{source} is the item's whole segment, which lasts {segment.seconds:.3f} s, but {found}: an incomplete "
        "download. It was deleted, so the next acquire run downloads it again.",
        failure_class=FailureClass.TRANSIENT,
    )


def _block_peak(block: np.ndarray) -> float:
    """The largest absolute sample value, without an ``abs`` copy of the block."""
    return max(float(block.max(initial=0.0)), -float(block.min(initial=0.0)))


def _dbfs(peak: float) -> float:
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def _range_text(start_s: float | None, end_s: float | None) -> str:
    if start_s is None and end_s is None:
        return ""
    end = "the end" if end_s is None else f"{end_s:g} s"
    return f" between {start_s or 0:g} s and {end}"


def _write_flac(target: Path, blocks: Iterable[np.ndarray], sample_rate: int, channels: int) -> tuple[int, float]:
    """Write float ``[frames, channels]`` blocks to ``target`` as 16-bit FLAC, clipped to full scale (in
    place where a block allows it: one block less in memory); ``(frames, peak)`` of what was written. An
    error raised by ``blocks`` leaves ``target`` untouched."""
    frames, peak = 0, 0.0
    try:
        with atomic_path(target) as temp, sf.SoundFile(
            temp, "w", sample_rate, channels, format="FLAC", subtype="PCM_16"
        ) as flac:
            for block in blocks:
                clipped = np.clip(block, -1.0, 1.0, out=block if block.flags.writeable else None)
                flac.write(clipped)
                frames += len(clipped)
                peak = max(peak, _block_peak(clipped))
    except (OSError, sf.LibsndfileError) as error:
        raise AudioError(
            "write_failed",
            f"could not write the clip {target} ({error}); check free space and permissions.",
            failure_class=FailureClass.TRANSIENT,
        ) from None
    return frames, peak
