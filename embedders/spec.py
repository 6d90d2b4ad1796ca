"""What one embedder module declares: its ``SPEC``, read by everything that needs to know a model without
loading it.

Each ``embedders/<name>.py`` defines ``SPEC = EmbedderSpec(...)`` (as each dataset module defines ``SOURCE``);
the registry (:mod:`embedders`), the weights table of ``musictext models``, the stored sizes ``verify``
checks, the runtime's memory estimates, the choice of device and the CLI's help are all read from it, so
adding an embedder is adding one file.

A spec also names the **space** its vectors live in. Two vectors are comparable only when they come from
the same space: the same model weights *and* the same computation (windows, hops, padding, channel
handling, resampling, enrichment). Every shard records the space, shards of different spaces are never
mixed, and a change of computation is a new space name, so vectors stored before it are recognised as
old rather than silently compared with new ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedders.weights import WeightsSpec

if TYPE_CHECKING:
    from embedders.base import Embedder

NAVIDROME_SPACE = "navidrome-2025.11"
"""The vectors a Navidrome server stores, as its ``python_services/embedding_models.py`` computed them from
November 2025 (shared/navidrome.md): the space musictext's text embedders must point into."""

PRECISIONS = ("reference", "bf16")
"""``reference``: each model at the precision the reference runs it (float32; Music2Latent under its
package's own float16 autocast on CUDA). ``bf16``: bfloat16 autocast on CUDA, faster, checked against the
parity tolerance only on a CPU here (README, "Audio models")."""

Factory = Callable[[Path | None, str, str], "Embedder"]
"""``(weights directory or None, device, precision)`` → a loaded embedder."""


@dataclass(frozen=True)
class EmbedderSpec:
    name: str
    """What users type (``--model``) and the directory name of its shards."""
    summary: str
    """One line for ``musictext models list`` and the CLI help."""
    factory: Factory
    space: str
    frame_dim: int
    """Rows of one frame; the stored vector is ``3 · frame_dim`` (enrichment)."""
    sample_rate: int
    """The rate the model takes its audio at."""
    window_s: float
    hop_s: float
    audio_input: str
    """How a file's audio becomes the model's input (channels, resampler, quantisation), recorded in shards."""
    window_padding: str = "none"
    """What fills a window the audio does not fill: ``zeros``, ``repeat`` (from the track's start) or ``none``."""
    weights: WeightsSpec | None = None
    """Where its weights come from; ``None`` for weight-free embedders."""
    device: bool = False
    """Runs on a device (GPU) in the batched torch runtime; otherwise clip by clip on the CPU."""
    audio_bytes_per_second: int = 0
    """Device memory one forward pass needs per second of audio (sizes the runtime's batches)."""
    service_name: str = ""
    """The name Navidrome's embedding service knows the model by (``latent`` for Music2Latent), when it differs
    from ``name``: ``musictext serve`` answers to it."""

    @property
    def served_as(self) -> str:
        return self.service_name or self.name

    @property
    def stored_dim(self) -> int:
        return 3 * self.frame_dim
