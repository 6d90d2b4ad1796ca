"""The batched torch runtime: canonical clips → vectors in a model's space, on a GPU (or, slowly, a CPU).

A clip — 10 s or a whole track of many minutes — is one item. DataLoader worker processes decode it and
prepare it as the reference does (:mod:`embedders.audio_input`: channels, torchaudio resampling, 16-bit
round trip), so decoding and resampling never run in the loop that feeds the device. The loader hands over
single tracks, so every worker stays busy however few tracks a batch holds.

The embedder plans each track (:class:`embedders.windows.TrackPlan`): the pieces its model must see —
MuQ's 10 s clips, MERT's 30 s windows, Music2Latent's 10 s chunks — as positions in the track. The main
process gathers tracks until their pieces fill a forward pass, groups pieces of equal shape from any track,
and copies each group into page-locked memory ``batch_size`` pieces at a time, zero-filled where the track
ends, for an asynchronous copy to the device. Only one batch of pieces is ever on the device: a ten-minute
track reaches it a window batch at a time, and its frames (one small vector per window) are all that stays.
Each track's frames are assembled and enriched on the device, so only ``3·D`` numbers per track cross back.

How many pieces go through the model at once comes from the free device memory and the spec's estimate of
bytes per second of audio; an out-of-memory error halves it and retries instead of stopping the unit. A
track that cannot be decoded, makes the model fail, or gives NaN is recorded with the same reasons as the
CPU runtime, and the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from embedders.audio_input import AudioInput, prepare
from embedders.base import Embedder
from embedders.runtime import REMAKE, STAGE, EmbedError, too_short, unusable
from embedders.torch_enrichment import enrich
from embedders.windows import Piece, TrackPlan
from processors.errors import AudioError
from store.forking import forget_inherited_exit_hooks
from store.shards import Embedded
from store.status import StatusRecord

MEMORY_FRACTION = 0.8
MAX_PIECES = 64
CPU_PIECES = 4
PREFETCH_TRACKS = 4
"""Prepared tracks each loader worker keeps ready, so a forward pass never waits for the next track."""


class TrackEmbedder(Embedder, Protocol):
    """An embedder of whole tracks on a device: plans pieces, runs them in batches, assembles frames."""

    device: torch.device
    frame_dim: int
    audio_input: AudioInput
    piece_s: float
    """Seconds of audio in one piece, for sizing batches."""

    def plan(self, samples: int) -> TrackPlan:
        """The pieces and the frame count of a track of ``samples`` samples at the model's rate."""
        ...

    def forward(self, pieces: torch.Tensor, key: tuple[Any, ...]) -> torch.Tensor:
        """``pieces``: float32 ``[B, channels, size]`` on the device, all of shape ``key``; one output per row."""
        ...

    def assemble(self, plan: TrackPlan, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The track's frames ``[frame_dim, T]`` from its pieces' outputs, in plan order."""
        ...


@dataclass
class PreparedTrack:
    item_id: str
    path: Path
    audio: torch.Tensor | None
    """float32 ``[channels, N]`` at the model's rate; ``None`` when ``failure`` is set."""
    failure: StatusRecord | None = None


class PreparedTracks(Dataset[PreparedTrack]):
    """``(item_id, clip path)`` pairs prepared for the model; an unreadable clip becomes its failed record."""

    def __init__(self, clips: Sequence[tuple[str, Path]], audio_input: AudioInput) -> None:
        self.clips = list(clips)
        self.audio_input = audio_input

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> PreparedTrack:
        item_id, path = self.clips[index]
        path = Path(path)
        try:
            audio = prepare(path, self.audio_input)
        except EmbedError as error:
            return PreparedTrack(item_id, path, None, error.record(item_id, STAGE))
        except AudioError as error:
            failure = StatusRecord.failed(item_id, STAGE, error.reason, f"{error.detail} {REMAKE}",
                                          failure_class=error.failure_class)
            return PreparedTrack(item_id, path, None, failure)
        return PreparedTrack(item_id, path, torch.from_numpy(audio))


def initial_batch_size(embedder: TrackEmbedder) -> int:
    """Pieces per forward pass that the free device memory holds by the spec's estimate (CPU: a few)."""
    if embedder.device.type != "cuda":
        return CPU_PIECES
    free, _total = torch.cuda.mem_get_info(embedder.device)
    per_piece = max(1, embedder.spec.audio_bytes_per_second) * embedder.piece_s
    return max(1, min(MAX_PIECES, int(free * MEMORY_FRACTION // per_piece)))


@dataclass(frozen=True)
class _PieceFailure:
    reason: str
    detail: str


@dataclass
class _Track:
    """A prepared track on its way through the runtime: its plan and, as they come, its pieces' outputs."""

    prepared: PreparedTrack
    plan: TrackPlan | None
    outputs: list[torch.Tensor | _PieceFailure | None]


class TorchRuntime:
    """Embeds clips in batches with one embedder on its device; see the module docstring."""

    def __init__(self, embedder: TrackEmbedder, *, batch_size: int | None = None, num_workers: int = 2) -> None:
        self.embedder = embedder
        self.batch_size = batch_size or initial_batch_size(embedder)
        """Pieces per forward pass; halved for good on an out-of-memory error."""
        self.num_workers = num_workers
        self.largest_batch = 0
        """Most pieces one forward pass held, for checking that memory stays bounded."""

    def embed(self, clips: Iterable[tuple[str, Path]]) -> Iterator[tuple[str, Embedded | StatusRecord]]:
        """``(item_id, Embedded)`` or ``(item_id, failed record)`` per clip, in input order."""
        for tracks in self._gathered(self.tracks(clips)):
            yield from self._embed_tracks(tracks)

    def tracks(self, clips: Iterable[tuple[str, Path]]) -> Iterator[PreparedTrack]:
        """The input side alone: clips prepared by the loader's workers, in order."""
        loader = DataLoader(
            PreparedTracks(list(clips), self.embedder.audio_input),
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=PREFETCH_TRACKS if self.num_workers else None,
            worker_init_fn=forget_inherited_exit_hooks,
        )
        yield from loader

    def _gathered(self, prepared: Iterable[PreparedTrack]) -> Iterator[list[_Track]]:
        """Consecutive tracks holding at least ``batch_size`` pieces together (the last group: the rest)."""
        gathered: list[_Track] = []
        pieces = 0
        for track in prepared:
            plan = self.embedder.plan(track.audio.shape[-1]) if track.audio is not None else None
            gathered.append(_Track(track, plan, [None] * (len(plan.pieces) if plan else 0)))
            pieces += len(plan.pieces) if plan else 0
            if pieces >= self.batch_size:
                yield gathered
                gathered, pieces = [], 0
        if gathered:
            yield gathered

    def _embed_tracks(self, tracks: list[_Track]) -> list[tuple[str, Embedded | StatusRecord]]:
        """A list, not a generator: inference mode must not stay switched on in the caller between yields."""
        with torch.inference_mode():
            groups: dict[tuple[Any, ...], list[tuple[_Track, int, Piece]]] = {}
            for track in tracks:
                for index, piece in enumerate(track.plan.pieces if track.plan else ()):
                    groups.setdefault(piece.key, []).append((track, index, piece))
            for key, entries in groups.items():
                for (track, index, _), output in zip(entries, self._run(key, entries), strict=True):
                    track.outputs[index] = output
            outcomes = [self._track_vector(track) for track in tracks]
            vectors = [outcome for outcome in outcomes if isinstance(outcome, torch.Tensor)]
            host = iter(torch.stack(vectors).cpu().numpy() if vectors else [])
        return [
            (track.prepared.item_id,
             self._checked(track, next(host)) if isinstance(outcome, torch.Tensor) else outcome)
            for track, outcome in zip(tracks, outcomes, strict=True)
        ]

    def _run(
        self, key: tuple[Any, ...], entries: list[tuple[_Track, int, Piece]]
    ) -> list[torch.Tensor | _PieceFailure]:
        """Every piece's output or why there is none, ``batch_size`` pieces per forward pass."""
        results: list[torch.Tensor | _PieceFailure] = []
        while len(results) < len(entries):
            part = entries[len(results) : len(results) + self.batch_size]
            try:
                results.extend(self._forward(key, part).unbind(0))
            except torch.cuda.OutOfMemoryError as error:
                if len(part) > 1:
                    self.batch_size = len(part) // 2
                    _release_cached_memory(self.embedder.device)
                    continue
                results.append(_PieceFailure(
                    "out_of_memory",
                    f"{self.embedder.spec.name} ran out of device memory on a single piece of "
                    f"{self.embedder.piece_s:g} s ({error}); run on a device with more free memory.",
                ))
            except Exception as error:  # one bad piece must not fail its batch-mates: retry them alone
                if len(part) > 1:
                    for single in part:
                        results.extend(self._run(key, [single]))
                    continue
                results.append(_PieceFailure(
                    "embedder_error", f"{self.embedder.spec.name} failed: {type(error).__name__}: {error}"
                ))
        return results

    def _forward(self, key: tuple[Any, ...], part: list[tuple[_Track, int, Piece]]) -> torch.Tensor:
        batch = stack_pieces([(track.prepared.audio, piece) for track, _, piece in part],
                         pin=self.embedder.device.type == "cuda")
        self.largest_batch = max(self.largest_batch, len(part))
        outputs = self.embedder.forward(batch.to(self.embedder.device, non_blocking=True), key)
        if outputs.shape[0] != len(part):
            raise RuntimeError(
                f"embedder {self.embedder.spec.name!r} broke its contract: {outputs.shape[0]} outputs for "
                f"{len(part)} pieces"
            )
        return outputs

    def _track_vector(self, track: _Track) -> torch.Tensor | StatusRecord:
        item_id, path = track.prepared.item_id, track.prepared.path
        if track.prepared.failure is not None:
            return track.prepared.failure
        failure = next((output for output in track.outputs if isinstance(output, _PieceFailure)), None)
        if failure is not None:
            return EmbedError(failure.reason, failure.detail).record(item_id, STAGE)
        if track.plan is None or track.plan.frames == 0:
            return too_short(self.embedder.spec.name, path).record(item_id, STAGE)
        frames = self.embedder.assemble(track.plan, track.outputs)
        if frames.shape != (self.embedder.frame_dim, track.plan.frames):
            raise RuntimeError(
                f"embedder {self.embedder.spec.name!r} broke its contract: frames of shape {tuple(frames.shape)}, "
                f"expected ({self.embedder.frame_dim}, {track.plan.frames})"
            )
        return enrich(frames[None])[0]

    def _checked(self, track: _Track, vector: np.ndarray) -> Embedded | StatusRecord:
        item_id, path = track.prepared.item_id, track.prepared.path
        problem = unusable(self.embedder.spec.name, path, vector)
        if problem is not None:
            return problem.record(item_id, STAGE)
        return Embedded(vector, track.plan.frames)


def stack_pieces(pieces: list[tuple[torch.Tensor, Piece]], *, pin: bool = False) -> torch.Tensor:
    """``[B, channels, size]``: each piece's segments end to end, zeros after them (see :class:`Piece`)."""
    channels = pieces[0][0].shape[0]
    batch = torch.zeros((len(pieces), channels, pieces[0][1].size), pin_memory=pin)
    for row, (audio, piece) in enumerate(pieces):
        offset = 0
        for start, length in piece.segments:
            batch[row, :, offset : offset + length] = audio[:, start : start + length]
            offset += length
    return batch


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
