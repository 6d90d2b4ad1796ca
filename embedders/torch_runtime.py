"""The batched torch runtime: canonical clips → enriched vectors on a GPU (or, slowly, on a CPU).

DataLoader worker processes decode one clip each into windows of ``window_s`` seconds, exactly as
:func:`embedders.runtime.embed_clips` does with ``chunk_s=window_s`` (same seeks, channel mapping and
resampling, the remainder joining the last window), so both runtimes give the same vectors. The
loader hands over single clips, not batches, so every worker is busy however few clips a batch holds
(a loader batch of 64 clips would be decoded by one worker alone while the others idle). The main
process gathers clips until they hold a forward pass worth of windows, then groups equal-length
windows: clips of one dataset mostly share a length, so nearly every window goes through the model in
one call, and nothing is padded (the models normalise over the whole input, so padding would change
the frames). Windows are stacked into pinned memory and copied without blocking; the model runs under
``torch.inference_mode`` and, on CUDA, the embedders' own bf16 autocast. The frames of all windows of a
clip are joined along time and enriched on the device, so enrichment sees every frame of the clip
while a full song only ever reaches the model one window at a time.

How many windows go through the model at once comes from the free device memory and a per-model
estimate of bytes per second of audio; an out-of-memory error halves it and retries instead of
stopping the unit. A clip that cannot be decoded, makes the model fail, or gives NaN is recorded with
the same reasons as the CPU runtime, and the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from embedders.base import Embedder
from embedders.runtime import REMAKE, STAGE, EmbedError, clip_chunks, non_finite_audio, too_short, unusable
from embedders.torch_enrichment import enrich
from processors.errors import AudioError
from store.forking import forget_inherited_exit_hooks
from store.status import StatusRecord

WINDOW_S = 10.0
"""The models' natural window: MERT and Music2Latent are used on 10 s clips (shared/embedders.md §0)."""
MODEL_WINDOW_S = {"muq": 30.0}
"""Longer windows for models that cut their own overlapping windows: MuQ-MuLan's 10 s windows every
2.5 s must see a whole 30 s clip, not 10 s of it."""
AUDIO_BYTES_PER_SECOND = {"mert": 20_000_000, "music2latent": 460_000_000, "muq": 80_000_000}
"""Device memory per second of audio in one forward pass, twice the measured peak so that the
frames kept until a clip is complete and the enrichment's float64 blocks fit too (MERT: 2.94 GiB for
32 × 10 s, shared/embedders.md §2; MuQ-MuLan: 2.97 GiB for 32 × 10 s, §1, four times over for windows
every quarter window; Music2Latent: 2 600 bytes per channel sample, embedders/music2latent.py)."""
DEFAULT_AUDIO_BYTES_PER_SECOND = 100_000_000
MEMORY_FRACTION = 0.8
MAX_WINDOWS = 64
CPU_WINDOWS = 4
PREFETCH_CLIPS = 8
"""Decoded clips each loader worker keeps ready, so a forward pass never waits for the next batch."""


class TorchEmbedder(Embedder, Protocol):
    """An embedder whose frames can be computed from a tensor already on its device (mert, music2latent)."""

    device: torch.device

    def frames_tensor(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio``: float ``[B, channels, N]`` at ``sample_rate`` on any device; float32 ``[B, frame_dim, T]``
        on ``device``."""
        ...


@dataclass(frozen=True)
class WindowSpec:
    """What decoding needs to know about the embedder: picklable, unlike the model, for spawned workers."""

    channels: int
    sample_rate: int
    hop_s: float


@dataclass
class DecodedClip:
    item_id: str
    path: Path
    windows: list[torch.Tensor]
    """float32 ``[channels, n]`` at the embedder's rate, in time order; empty when ``failure`` is set."""
    failure: StatusRecord | None = None


class ClipWindows(Dataset[DecodedClip]):
    """``(item_id, clip path)`` pairs decoded into windows; an unreadable clip becomes its failed record."""

    def __init__(self, clips: Sequence[tuple[str, Path]], spec: WindowSpec, window_s: float = WINDOW_S):
        self.clips = list(clips)
        self.spec = spec
        self.window_s = window_s

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> DecodedClip:
        item_id, path = self.clips[index]
        try:
            windows = list(clip_chunks(self.spec, Path(path), self.window_s))
            if not all(np.isfinite(window).all() for window in windows):
                raise non_finite_audio(Path(path))
        except EmbedError as error:
            return DecodedClip(item_id, Path(path), [], error.record(item_id, STAGE))
        except AudioError as error:
            detail = f"{error.detail} {REMAKE}"
            failure = StatusRecord.failed(
                item_id, STAGE, error.reason, detail, failure_class=error.failure_class
            )
            return DecodedClip(item_id, Path(path), [], failure)
        tensors = [torch.from_numpy(np.ascontiguousarray(window)) for window in windows]
        return DecodedClip(item_id, Path(path), tensors)


@dataclass
class WindowGroup:
    """Equal-length windows of several clips, stacked for one forward pass."""

    audio: torch.Tensor
    """float32 ``[W, channels, n]``."""
    owners: list[tuple[int, int]]
    """``(clip index in the batch, window index in the clip)`` per row of ``audio``."""


@dataclass
class ClipBatch:
    item_ids: list[str]
    paths: list[Path]
    windows_per_clip: list[int]
    failures: dict[int, StatusRecord]
    groups: list[WindowGroup] = field(default_factory=list)


def collate(clips: list[DecodedClip], *, pin: bool = False) -> ClipBatch:
    """Group the clips' windows by length (the first window of most clips, and all of equal-length clips);
    with ``pin``, each group is stacked straight into page-locked memory for an asynchronous copy."""
    by_length: dict[int, list[tuple[torch.Tensor, tuple[int, int]]]] = {}
    for clip_index, clip in enumerate(clips):
        for window_index, window in enumerate(clip.windows):
            by_length.setdefault(window.shape[-1], []).append((window, (clip_index, window_index)))
    groups = [WindowGroup(_stack([window for window, _ in rows], pin), [owner for _, owner in rows])
              for rows in by_length.values()]
    failures = {index: clip.failure for index, clip in enumerate(clips) if clip.failure is not None}
    ids, paths = [clip.item_id for clip in clips], [clip.path for clip in clips]
    return ClipBatch(ids, paths, [len(clip.windows) for clip in clips], failures, groups)


def _stack(windows: list[torch.Tensor], pin: bool) -> torch.Tensor:
    out = torch.empty((len(windows), *windows[0].shape), dtype=windows[0].dtype, pin_memory=pin)
    return torch.stack(windows, out=out)


def initial_batch_size(embedder: TorchEmbedder, window_s: float = WINDOW_S) -> int:
    """Windows per forward pass that the free device memory holds by the model's estimate (CPU: a few)."""
    if embedder.device.type != "cuda":
        return CPU_WINDOWS
    free, _total = torch.cuda.mem_get_info(embedder.device)
    per_window = AUDIO_BYTES_PER_SECOND.get(embedder.name, DEFAULT_AUDIO_BYTES_PER_SECOND) * window_s
    return max(1, min(MAX_WINDOWS, int(free * MEMORY_FRACTION // per_window)))


@dataclass(frozen=True)
class _WindowFailure:
    reason: str
    detail: str


class TorchRuntime:
    """Embeds clips in batches with one embedder on its device; see the module docstring."""

    def __init__(
        self,
        embedder: TorchEmbedder,
        *,
        window_s: float | None = None,
        batch_size: int | None = None,
        num_workers: int = 2,
    ) -> None:
        self.embedder = embedder
        self.window_s = window_s or MODEL_WINDOW_S.get(embedder.name, WINDOW_S)
        self.batch_size = batch_size or initial_batch_size(embedder, self.window_s)
        """Windows per forward pass; halved for good on an out-of-memory error."""
        self.num_workers = num_workers

    def embed(self, clips: Iterable[tuple[str, Path]]) -> Iterator[tuple[str, np.ndarray | StatusRecord]]:
        """``(item_id, float32 unit vector)`` or ``(item_id, failed record)`` per clip, in input order."""
        for batch in self.batches(clips):
            yield from self._embed_batch(batch)

    def batches(self, clips: Iterable[tuple[str, Path]]) -> Iterator[ClipBatch]:
        """The input side alone: clips decoded by the loader's workers, gathered, grouped and (on CUDA)
        pinned, about ``batch_size`` windows per batch."""
        spec = WindowSpec(self.embedder.channels, self.embedder.sample_rate, self.embedder.hop_s)
        loader = DataLoader(
            ClipWindows(list(clips), spec, self.window_s),
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=PREFETCH_CLIPS if self.num_workers else None,
            worker_init_fn=forget_inherited_exit_hooks,
        )
        pin = self.embedder.device.type == "cuda"
        for clips_of_batch in self._gathered(loader):
            yield collate(clips_of_batch, pin=pin)

    def _gathered(self, decoded: Iterable[DecodedClip]) -> Iterator[list[DecodedClip]]:
        """Consecutive clips holding at least ``batch_size`` windows together (the last group: the rest)."""
        gathered: list[DecodedClip] = []
        windows = 0
        for clip in decoded:
            gathered.append(clip)
            windows += len(clip.windows)
            if windows >= self.batch_size:
                yield gathered
                gathered, windows = [], 0
        if gathered:
            yield gathered

    @torch.inference_mode()
    def _embed_batch(self, batch: ClipBatch) -> list[tuple[str, np.ndarray | StatusRecord]]:
        """A list, not a generator: inference mode must not stay switched on in the caller between yields."""
        frames: list[list[torch.Tensor | _WindowFailure | None]] = [
            [None] * count for count in batch.windows_per_clip
        ]
        for group in batch.groups:
            audio = group.audio.to(self.embedder.device, non_blocking=True)
            for (clip, window), result in zip(group.owners, self._frames(audio), strict=True):
                frames[clip][window] = result
        outcomes = [self._clip_vector(batch, index, windows) for index, windows in enumerate(frames)]
        vectors = [outcome for outcome in outcomes if isinstance(outcome, torch.Tensor)]
        host = iter(torch.stack(vectors).cpu().numpy() if vectors else [])
        return [
            (item_id, self._checked(item_id, path, next(host)) if isinstance(outcome, torch.Tensor)
             else outcome)
            for item_id, path, outcome in zip(batch.item_ids, batch.paths, outcomes, strict=True)
        ]

    def _clip_vector(
        self, batch: ClipBatch, index: int, windows: list[torch.Tensor | _WindowFailure | None]
    ) -> torch.Tensor | StatusRecord:
        item_id = batch.item_ids[index]
        if index in batch.failures:
            return batch.failures[index]
        failure = next((window for window in windows if isinstance(window, _WindowFailure)), None)
        if failure is not None:
            return EmbedError(failure.reason, failure.detail).record(item_id, STAGE)
        frames = torch.cat(windows, dim=-1)
        if frames.shape[-1] == 0:
            return too_short(self.embedder.name, batch.paths[index]).record(item_id, STAGE)
        return enrich(frames[None])[0]

    def _checked(self, item_id: str, path: Path, vector: np.ndarray) -> np.ndarray | StatusRecord:
        problem = unusable(self.embedder.name, path, vector)
        return vector if problem is None else problem.record(item_id, STAGE)

    def _frames(self, audio: torch.Tensor) -> list[torch.Tensor | _WindowFailure]:
        """Per window ``[frame_dim, T]`` frames or why there are none, ``batch_size`` windows at a time."""
        results: list[torch.Tensor | _WindowFailure] = []
        while len(results) < len(audio):
            part = audio[len(results) : len(results) + self.batch_size]
            try:
                results.extend(self.forward_windows(part).unbind(0))
            except torch.cuda.OutOfMemoryError as error:
                if len(part) > 1:
                    self.batch_size = len(part) // 2
                    _release_cached_memory(self.embedder.device)
                    continue
                results.append(_WindowFailure(
                    "out_of_memory",
                    f"{self.embedder.name} ran out of device memory on a single {self.window_s:g} s window "
                    f"({error}); run on a device with more free memory or with a shorter window.",
                ))
            except Exception as error:  # one bad window must not fail its batch-mates: retry them alone
                if len(part) > 1:
                    for window in part.split(1):
                        results.extend(self._frames(window))
                    continue
                results.append(_WindowFailure(
                    "embedder_error", f"{self.embedder.name} failed: {type(error).__name__}: {error}"
                ))
        return results

    def forward_windows(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio``: ``[W, channels, n]`` on the device; returns ``[W, frame_dim, T]`` (one model call)."""
        frames = self.embedder.frames_tensor(audio)
        if frames.ndim != 3 or frames.shape[:2] != (len(audio), self.embedder.frame_dim):
            raise RuntimeError(
                f"embedder {self.embedder.name!r} broke its contract: frames of shape {tuple(frames.shape)} "
                f"for {len(audio)} windows, expected ({len(audio)}, {self.embedder.frame_dim}, T)"
            )
        return frames


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
