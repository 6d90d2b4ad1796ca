"""``dsp``: a weight-free embedder from classic librosa frame features; it runs anywhere, fast.

Per frame (n_fft 2048, hop 512 at 22 050 Hz, i.e. ~93 ms windows every ~23 ms) it stacks five
feature families, all derived from one STFT per clip:

=============  ====  ==========================================================================
family         rows  what
=============  ====  ==========================================================================
``log_mel``     64   mel band energies (up to 10 kHz) in dB *relative to the frame's mean level*
``mfcc``        20   MFCC 0–19 of the absolute dB mel spectrogram (MFCC 0 = 8 × the frame level)
``chroma``      12   pitch-class energy C, C#, …, B, each frame scaled to a maximum of 1
``contrast``     7   spectral contrast (peak minus valley, dB): six octave bands from 200 Hz, + 6.4–10 kHz
``onset``        1   onset strength (mean positive dB change across mel bands)
=============  ====  ==========================================================================

Why the log-mel rows are relative: a gain changes every absolute dB value by the same amount, so
absolute log-mel rows would make two masterings of one song look like different music. Relative to
the frame level, the rows keep the spectral shape and the level survives in one place, MFCC 0.
Chroma (per-frame normalised), contrast and onset (dB differences) are gain-invariant already.
(librosa's spectral contrast floors each band 80 dB below the loudest band of the audio it is given;
this only touches near-silent bands.)

Why standardise: the families live on very different scales (MFCC 0 around −170, chroma 0…1), and
the enriched mean would be dominated by a few rows. Each family is mapped with *fixed* constants,
``(value − offset) / scale``, so that typical music lands near 0 with a spread near 1. Fixed
constants, not statistics of the corpus being embedded, because a clip's embedding must not
depend on which other clips were embedded with it. The constants are per family (MFCC 0, the
level, gets its own) and were read, rounded, from the means and standard deviations of features over
rendered General-MIDI music (12 instruments, with and without drums) plus noise; they only need to
put the families on comparable scales, not to whiten them.

Each clip of a batch is processed on its own, so an embedding never depends on its batch-mates.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from embedders.spec import EmbedderSpec

N_MELS = 64
N_MFCC = 20
F_MAX = 10_000.0
"""Highest frequency the mel bands and the contrast bands look at. At 22 050 Hz, what lies above
~10 kHz is mostly the transition band of the resampler's anti-alias filter (soxr's passband ends at
91 % of Nyquist): measured there, the top contrast band changed by 9 dB between soxr's "HQ" and
"VHQ" settings, so it described the resampler, not the music."""
_DB_FLOOR = 1e-10
"""Power floor for dB conversion (−100 dB): fixed, unlike a per-clip ``top_db``, so that windows of
one long clip are converted alike."""


@dataclass(frozen=True)
class FeatureFamily:
    name: str
    rows: int
    offset: tuple[float, ...]
    """Subtracted per row; one value applies to every row."""
    scale: tuple[float, ...]


FAMILIES: tuple[FeatureFamily, ...] = (
    FeatureFamily("log_mel", N_MELS, offset=(0.0,), scale=(16.0,)),
    FeatureFamily("mfcc", N_MFCC, offset=(-170.0,) + (0.0,) * (N_MFCC - 1),
                  scale=(80.0,) + (20.0,) * (N_MFCC - 1)),
    FeatureFamily("chroma", 12, offset=(0.25,), scale=(0.3,)),
    FeatureFamily("contrast", 7, offset=(26.0,), scale=(7.5,)),
    FeatureFamily("onset", 1, offset=(1.0,), scale=(2.0,)),
)


def _standardiser(families: tuple[FeatureFamily, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``offset`` and ``scale`` columns (``[frame_dim, 1]``) for broadcasting over frames."""
    offsets = np.concatenate([np.broadcast_to(f.offset, f.rows) for f in families])
    scales = np.concatenate([np.broadcast_to(f.scale, f.rows) for f in families])
    return offsets[:, None].astype(np.float32), scales[:, None].astype(np.float32)


RECIPE = "1"
"""Version of the feature recipe (families, parameters, constants); bump it on any change: it names the space."""


class DspEmbedder:
    """The :class:`embedders.base.FrameEmbedder` contract for the feature recipe described above."""

    name = "dsp"
    revision = RECIPE
    weights_sha256 = ""
    precision = "reference"
    sample_rate = 22_050
    channels = 1
    n_fft = 2048
    hop_length = 512
    window_s = n_fft / sample_rate
    hop_s = hop_length / sample_rate
    frame_dim = sum(f.rows for f in FAMILIES)

    def __init__(self) -> None:
        self.spec = SPEC
        self._offset, self._scale = _standardiser(FAMILIES)
        frequencies = librosa.fft_frequencies(sr=self.sample_rate, n_fft=self.n_fft)
        self._contrast_freqs = frequencies[frequencies <= F_MAX]

    @staticmethod
    def family_rows(family: str) -> slice:
        """Where a family's rows lie in a frame, e.g. ``frames[:, family_rows("chroma"), :]``."""
        start = 0
        for f in FAMILIES:
            if f.name == family:
                return slice(start, start + f.rows)
            start += f.rows
        raise KeyError(f"no feature family {family!r}; families are {', '.join(f.name for f in FAMILIES)}")

    def frames(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: float32 ``[B, 1, N]`` at 22 050 Hz; returns float32 ``[B, 104, 1 + N // 512]``."""
        if batch.ndim != 3 or batch.shape[1] != self.channels:
            raise ValueError(f"dsp takes mono batches [B, 1, N], got shape {batch.shape}")
        if batch.shape[-1] == 0:
            raise ValueError("dsp needs at least one sample per clip")
        return np.stack([self._clip_frames(np.asarray(clip[0], dtype=np.float32)) for clip in batch])

    def _clip_frames(self, samples: np.ndarray) -> np.ndarray:
        magnitude = np.abs(librosa.stft(samples, n_fft=self.n_fft, hop_length=self.hop_length))
        power = magnitude**2
        mel = librosa.feature.melspectrogram(S=power, sr=self.sample_rate, n_mels=N_MELS, fmax=F_MAX)
        mel_db = librosa.power_to_db(mel, ref=1.0, amin=_DB_FLOOR, top_db=None)
        features = np.concatenate(
            [
                mel_db - mel_db.mean(axis=0, keepdims=True),
                librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC),
                librosa.feature.chroma_stft(S=power, sr=self.sample_rate, tuning=0.0),
                librosa.feature.spectral_contrast(
                    S=magnitude[: self._contrast_freqs.size], freq=self._contrast_freqs, sr=self.sample_rate
                ),
                librosa.onset.onset_strength(S=mel_db, sr=self.sample_rate)[None, :],
            ]
        )
        return ((features - self._offset) / self._scale).astype(np.float32)


SPEC = EmbedderSpec(
    name="dsp",
    summary="weight-free librosa features (log-mel, MFCC, chroma, contrast, onset); runs anywhere, fast",
    factory=lambda weights, device, precision: DspEmbedder(),
    space=f"musictext-dsp-{RECIPE}",
    frame_dim=DspEmbedder.frame_dim,
    sample_rate=DspEmbedder.sample_rate,
    window_s=DspEmbedder.window_s,
    hop_s=DspEmbedder.hop_s,
    audio_input=f"mono mean; soxr resample to {DspEmbedder.sample_rate} Hz",
)
