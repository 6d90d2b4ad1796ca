"""Channel layouts: canonical clips keep at most two channels; embedders want exactly one or two.

Six channels are taken to be 5.1 in the WAV/ffmpeg order (FL, FR, FC, LFE, BL, BR) and folded to
stereo with the ITU-R BS.775 coefficients (centre and surrounds at -3 dB, LFE dropped), scaled so the
sum cannot clip — what ``ffmpeg -ac 2`` does by default. Any other count above two carries no layout we
can trust (soundfile does not expose the WAV channel mask), so it becomes the mean of its channels, mono.
"""

from __future__ import annotations

import numpy as np

_SURROUND_GAIN = 1 / np.sqrt(2)
_ITU_5_1_TO_STEREO = np.array(
    [
        [1.0, 0.0, _SURROUND_GAIN, 0.0, _SURROUND_GAIN, 0.0],
        [0.0, 1.0, _SURROUND_GAIN, 0.0, 0.0, _SURROUND_GAIN],
    ],
    dtype=np.float32,
) / np.float32(1 + 2 * _SURROUND_GAIN)


def at_most_stereo(samples: np.ndarray) -> np.ndarray:
    """``samples`` ``[channels, frames]`` with one or two channels (see module docstring for more)."""
    channels = samples.shape[0]
    if channels <= 2:
        return samples
    if channels == 6:
        return _ITU_5_1_TO_STEREO @ samples
    return samples.mean(axis=0, keepdims=True, dtype=np.float32)


def stereo_channels(channels: int) -> int:
    """How many channels :func:`at_most_stereo` leaves of ``channels``, known before any audio is decoded."""
    return at_most_stereo(np.empty((channels, 0), dtype=np.float32)).shape[0]


def to_channels(samples: np.ndarray, channels: int) -> np.ndarray:
    """``samples`` ``[c, frames]`` as exactly ``channels`` (1 or 2): stereo averaged, mono duplicated."""
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, not {channels}")
    reduced = at_most_stereo(samples)
    if reduced.shape[0] == channels:
        return reduced
    if channels == 1:
        return reduced.mean(axis=0, keepdims=True, dtype=np.float32)
    return np.repeat(reduced, 2, axis=0)
