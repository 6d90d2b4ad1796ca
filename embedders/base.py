"""The embedder contracts: what the two runtimes ask of an embedder.

Every embedder carries its module's :class:`embedders.spec.EmbedderSpec` and says which weights (revision,
sha256) and precision its vectors came from; all of it goes into every shard.

* A :class:`FrameEmbedder` (``dsp``) turns a batch of equal-length clips at its own rate into frame features
  ``[B, D, T]``; the CPU runtime (:mod:`embedders.runtime`) feeds it a clip in bounded chunks and joins the
  frames. Its spec has ``device=False``.
* A track embedder (the models of Navidrome's space, ``device=True``) plans pieces of a whole track and runs
  them in batches on a device; its contract is :class:`embedders.torch_runtime.TrackEmbedder`, next to the
  runtime that uses it, so this module stays free of torch.

Enrichment (:mod:`embedders.enrichment`) turns a clip's ``[D, T]`` frames into the stored ``[3·D]`` vector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from embedders.spec import EmbedderSpec


@runtime_checkable
class Embedder(Protocol):
    spec: EmbedderSpec
    revision: str
    """Model weights revision (or a code version for weight-free embedders); recorded in every shard."""
    weights_sha256: str
    """sha256 of the weights file the vectors came from ("" for weight-free embedders); recorded in every shard."""
    precision: str
    """``reference`` or ``bf16`` (see :data:`embedders.spec.PRECISIONS`)."""
    frame_dim: int
    """Rows of one frame of the loaded model (the spec's for the published weights)."""


@runtime_checkable
class FrameEmbedder(Embedder, Protocol):
    channels: int
    """1 = the runtime down-mixes to mono before calling ``frames``; 2 = stereo, mono duplicated."""

    def frames(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: float32 ``[B, channels, N]`` at ``spec.sample_rate``.

        Returns float32 ``[B, spec.frame_dim, T]``.
        """
        ...
