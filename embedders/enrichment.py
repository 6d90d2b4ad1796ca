"""Enrichment: frame features ``[B, D, T]`` → one stored vector ``[B, 3·D]`` per clip.

The formula lives here once, in numpy; the GPU runtime mirrors it in torch and a test compares the
two. The vector is ``concat(mean, spread, drift)`` over time, L2-normalised, where for each of the
``D`` dimensions

* ``mean``   is the mean over the ``T`` frames,
* ``spread`` is the inter-quartile range divided by 1.3489795… (the IQR of a unit normal), a spread
  that a few outlier frames (a click, a silent gap) cannot dominate; the quartiles use numpy's
  default linear interpolation,
* ``drift``  is the mean of the first differences over time. It telescopes to
  ``(x[T-1] - x[0]) / (T - 1)``, which is what is computed: the same value without a ``[B, D, T-1]``
  temporary, which matters for MERT's 25 600 dimensions.

Decisions for the edge cases, so every implementation agrees:

* ``T == 1``: the IQR of one value is 0 and there are no differences, so ``spread`` and ``drift``
  are 0 (the vector is the normalised mean). This is what Navidrome stores for anything up to one
  window long (a 30 s clip is one 120 s MuQ window), so a single frame is not an error.
* ``T == 0``: a clip without frames cannot be summarised; :func:`enrich` raises ``ValueError``.
* An all-zero concatenation has no direction: it stays all-zero rather than becoming NaN (the norm
  is not divided by when it is 0). The embed runtime rejects such vectors, because a stored vector
  is always unit-norm.
"""

from __future__ import annotations

import numpy as np

IQR_OF_UNIT_NORMAL = 1.3489795003921634
"""The interquartile range of a unit normal, the constant of shared/navidrome.md to all its digits."""
ENRICHMENT = "concat(mean,iqr/1.3489795003921634,mean(diff));l2"
"""Stored in every shard's ``enrichment`` attribute; change it whenever the formula changes."""


def enriched_dim(frame_dim: int) -> int:
    return 3 * frame_dim


def enrich(frames: np.ndarray) -> np.ndarray:
    """``frames``: ``[B, D, T]``; returns float32 ``[B, 3·D]`` ordered as all means, all spreads, all drifts.

    Statistics are computed in float64 so that long clips (tens of thousands of frames) do not lose
    precision in the sums, and only the result is cast to float32.
    """
    if frames.ndim != 3:
        raise ValueError(f"frames must be [batch, dim, time], got shape {frames.shape}")
    batch, dim, steps = frames.shape
    if steps == 0:
        raise ValueError("frames have no time steps; a clip must yield at least one frame to be enriched")
    values = np.asarray(frames, dtype=np.float64)
    mean = values.mean(axis=-1)
    lower, upper = np.percentile(values, [25.0, 75.0], axis=-1)
    spread = (upper - lower) / IQR_OF_UNIT_NORMAL
    drift = (values[..., -1] - values[..., 0]) / (steps - 1) if steps > 1 else np.zeros((batch, dim))
    vectors = np.concatenate([mean, spread, drift], axis=-1)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
