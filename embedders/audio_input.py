"""A file's audio as a model's input, exactly as the reference prepares it (shared/navidrome.md).

The reference takes the decoded waveform at its own rate, averages its channels to mono (a plain mean),
resamples it with ``torchaudio.functional.resample`` at its defaults (windowed sinc, Hann, 6 zero
crossings, rolloff 0.99) and, for Music2Latent, writes it to a 16-bit PCM WAV file that the package reads
back. Doing the same steps with the same libraries here (soxr, which the rest of musictext resamples with,
is close but not the same) keeps the vectors within the parity tolerance by construction. The 16-bit round
trip goes through soundfile in memory, so it quantises exactly as the reference's temporary file does.

The file is decoded in blocks and folded to the model's channels block by block, so the full-rate
multichannel track never exists whole: what a worker holds is the track at the model's channels (mono for
the plan's path: four bytes per sample). This runs in the runtime's DataLoader workers, never in the loop
that feeds the device.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from embedders.runtime import EmbedError, non_finite_audio, require_clip
from processors.decode import open_audio
from store.status import FailureClass

BLOCK_S = 60.0
"""Seconds decoded at a time."""


@dataclass(frozen=True)
class AudioInput:
    """What a model takes: its rate, its channels and whether its audio passes through 16-bit PCM first.
    Picklable, so the runtime's decoding workers get it instead of the model."""

    sample_rate: int
    mono: bool = True
    """``True``: the mean of all channels. ``False``: the file's own channels (two are required)."""
    quantise_16bit: bool = False
    resample: bool = True
    """``False``: the audio stays at the file's rate (the library job's Music2Latent); it must be the model's."""

    def describe(self) -> str:
        """One line for shard attributes, e.g. ``mono mean; torchaudio resample to 24000 Hz``."""
        parts = ["mono mean" if self.mono else "stereo, channels kept"]
        rate = f"torchaudio resample to {self.sample_rate} Hz" if self.resample else f"{self.sample_rate} Hz files only"
        parts.append(rate)
        if self.quantise_16bit:
            parts.append("16-bit PCM round trip")
        return "; ".join(parts)


def prepare(path: Path, audio_input: AudioInput) -> np.ndarray:
    """The audio of ``path`` as float32 ``[channels, N]`` ready for the model (see the module docstring).

    Raises :class:`processors.errors.AudioError` (decoding) or :class:`EmbedError` (audio the model cannot
    take: non-finite samples, or a layout the variant cannot encode)."""
    require_clip(path)
    audio, rate = _decoded(path, audio_input)
    if not np.isfinite(audio).all():
        raise non_finite_audio(path)
    if rate != audio_input.sample_rate:
        audio = _resampled(audio, rate, audio_input.sample_rate)
    if audio_input.quantise_16bit:
        audio = _through_16bit_pcm(audio, audio_input.sample_rate)
    return audio


def _decoded(path: Path, audio_input: AudioInput) -> tuple[np.ndarray, int]:
    """The file at its own rate in the model's channels, folded block by block (one open file, read on)."""
    with open_audio(path, block_s=BLOCK_S) as stream:
        _check_layout(path, stream.channels, stream.sample_rate, audio_input)
        fold = (lambda block: block.mean(axis=1, dtype=np.float32)[None]) if audio_input.mono else np.transpose
        blocks = [fold(block) for block in stream.blocks]
    channels = 1 if audio_input.mono else stream.channels
    return np.concatenate([np.empty((channels, 0), dtype=np.float32), *blocks], axis=-1), stream.sample_rate


def _check_layout(path: Path, channels: int, rate: int, audio_input: AudioInput) -> None:
    """Refuse, before decoding, what the embedder cannot encode as the reference does."""
    if not audio_input.mono and channels != 2:
        raise EmbedError(
            "not_stereo",
            f"clip {path} has {channels} channel(s); this embedder reproduces Navidrome's library job, which "
            "encodes stereo files only (a mono file fails there). Embed it with music2latent (the mono path).",
            failure_class=FailureClass.PERMANENT,
        )
    if not audio_input.resample and rate != audio_input.sample_rate:
        raise EmbedError(
            "wrong_sample_rate",
            f"clip {path} is at {rate} Hz; this embedder encodes files at {audio_input.sample_rate} Hz only, "
            "as the reference does. Re-create the clip at that rate (setting sample_rate).",
        )


def _resampled(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    import torch
    import torchaudio.functional

    with torch.inference_mode():
        converted = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(audio)), rate, target)
    return converted.numpy()


def _through_16bit_pcm(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, sample_rate, format="WAV", subtype="PCM_16")
    buffer.seek(0)
    samples, _ = sf.read(buffer, dtype="float32", always_2d=True)
    return np.ascontiguousarray(samples.T)
