"""Cutting a track into model inputs: the window rule of shared/navidrome.md and the pieces the runtime batches.

The rule ("The shared rules", MuQ and MERT): windows of ``W`` samples start at ``0, H, 2H, …`` while they
fit; if none fits, or the last one ends before the track does, one more starts at ``max(N − W, 0)`` so the
end is covered; a window shorter than ``W`` (only when ``N < W``) is zero-padded at its end. So a 10 s clip
is one zero-padded window, and a five-minute track gives ``T`` windows that overlap by ``W − H``.

A :class:`Piece` is what one row of a forward pass holds: one or more stretches of the track laid end to
end and zero-filled to a fixed size. Pieces of equal shape (:attr:`Piece.key`) are stacked into one batch,
whatever track they come from; the embedder turns each piece's output back into its track's frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def window_starts(samples: int, window: int, hop: int) -> list[int]:
    """Start of every window of an ``samples``-long track (see the module docstring); none when empty."""
    if samples <= 0:
        return []
    starts = list(range(0, samples - window + 1, hop))
    if not starts or starts[-1] + window < samples:
        starts.append(max(samples - window, 0))
    return starts


@dataclass(frozen=True)
class Piece:
    """One model input: ``segments`` of the track (``(start, length)`` in samples) end to end, then zeros up
    to ``size`` samples."""

    segments: tuple[tuple[int, int], ...]
    size: int

    @property
    def key(self) -> tuple[int, ...]:
        """Pieces with equal keys can share a forward pass: ``(size,)`` for one stretch (how much of it is zero
        fill does not change the model's input shape), ``(size, *lengths)`` for several, whose joins the model
        needs to know (Music2Latent's filled last chunk)."""
        if len(self.segments) == 1:
            return (self.size,)
        return (self.size, *(length for _, length in self.segments))

    @classmethod
    def span(cls, start: int, length: int, size: int) -> Piece:
        """``length`` samples from ``start``, zero-padded to ``size``."""
        return cls(((start, length),), size)


@dataclass(frozen=True)
class TrackPlan:
    """How one track becomes frames: the pieces to run, and what the embedder needs to assemble them."""

    pieces: tuple[Piece, ...]
    frames: int
    """``T``: frames the track gives (0 when it is too short for any)."""
    layout: Any = None
    """The embedder's own bookkeeping (e.g. which pieces make up which window)."""
