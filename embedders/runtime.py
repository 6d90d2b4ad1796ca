"""The CPU embedding runtime for frame embedders (``dsp``): canonical clips → enriched vectors.

A clip is decoded in chunks of about ``chunk_s`` seconds (``processors.decode`` seeks by frame), each
converted to the embedder's channels and sample rate and turned into frames on its own; the frames
of all chunks are concatenated along time before enrichment. So enrichment still sees every frame
of the clip while memory stays bounded by the chunk length, however long the clip. Chunks start
on the embedder's hop grid; the remainder joins the last chunk instead of becoming a short chunk of
its own, so clips shorter than twice ``chunk_s`` are one chunk and give exactly the frames of a
whole-clip call. (Longer clips see a few milliseconds of resampler edge at each chunk border.)

Clips go through the embedder one at a time (``B = 1``): on a CPU, batching equal-length clips
saves nothing for ``dsp``, whose features are computed per clip anyway.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import store
from embedders.base import Embedder, FrameEmbedder
from embedders.enrichment import ENRICHMENT, enrich
from processors.channels import to_channels
from processors.decode import Audio, decode, probe_duration
from processors.errors import AudioError
from processors.resample import resample
from store.shards import Embedded, ShardAttributes
from store.status import FailureClass, StatusRecord

STAGE = "embed"
CHUNK_S = 60.0
REMAKE = "The clip is made by the preprocess stage; re-running it for this item re-creates the clip."


class EmbedError(AudioError):
    """A clip that decoded but gave no usable embedding; recorded like any :class:`AudioError`."""


def shard_attributes(embedder: Embedder) -> ShardAttributes:
    """What every shard written with this embedder records about how its vectors were made: the model and
    its weights, the space and the computation that defines it, the code version. The width is the loaded
    model's (weights of a smaller variant give another), not the spec's."""
    spec = embedder.spec
    return ShardAttributes(
        model=spec.name,
        model_revision=embedder.revision,
        dim=3 * embedder.frame_dim,
        enrichment=ENRICHMENT,
        sample_rate=spec.sample_rate,
        window_s=spec.window_s,
        hop_s=spec.hop_s,
        musictext_version=store.__version__,
        weights_sha256=embedder.weights_sha256,
        space=spec.space,
        audio_input=spec.audio_input,
        window_padding=spec.window_padding,
        precision=embedder.precision,
    )


def embed_clips(
    embedder: FrameEmbedder, clips: Iterable[tuple[str, Path]], *, chunk_s: float = CHUNK_S
) -> Iterator[tuple[str, Embedded | StatusRecord]]:
    """Yield ``(item_id, Embedded)`` or ``(item_id, failed record)`` per clip, in order.

    A clip that cannot be embedded never stops the others; its record says why and what to do.
    """
    for item_id, path in clips:
        try:
            yield item_id, embed_clip(embedder, Path(path), chunk_s=chunk_s)
        except EmbedError as error:
            yield item_id, error.record(item_id, STAGE)
        except AudioError as error:
            yield item_id, StatusRecord.failed(
                item_id, STAGE, error.reason, f"{error.detail} {REMAKE}", failure_class=error.failure_class
            )


def embed_clip(embedder: FrameEmbedder, path: Path, *, chunk_s: float = CHUNK_S) -> Embedded:
    """One clip's enriched float32 vector of size ``3 · frame_dim`` and its frame count.

    Raises :class:`AudioError` when the clip cannot be read, :class:`EmbedError` when it reads but
    gives no usable vector.
    """
    geometry = ChunkGeometry(embedder.channels, embedder.spec.sample_rate, embedder.spec.hop_s)
    chunk_frames = [_frames(embedder, chunk, path) for chunk in clip_chunks(geometry, path, chunk_s)]
    frames = np.concatenate(chunk_frames, axis=-1)
    if frames.shape[-1] == 0:
        raise too_short(embedder.spec.name, path)
    vector = enrich(frames)[0]
    problem = unusable(embedder.spec.name, path, vector)
    if problem is not None:
        raise problem
    return Embedded(vector, frames.shape[-1])


def non_finite_audio(path: Path) -> EmbedError:
    return EmbedError("non_finite_audio", f"clip {path} contains NaN or infinite sample values. {REMAKE}")


def too_short(model: str, path: Path) -> EmbedError:
    return EmbedError(
        "too_short_clip",
        f"clip {path} is too short for {model} to produce a single frame; drop it or use a longer clip.",
    )


def unusable(model: str, path: Path, vector: np.ndarray) -> EmbedError | None:
    """Why an enriched vector cannot be stored, if it cannot: NaN or infinite frames make it non-finite,
    all-zero frames leave it without direction. Shared by both runtimes, so their records agree."""
    if not np.isfinite(vector).all():
        return EmbedError(
            "non_finite_embedding",
            f"{model} produced NaN or infinite features for {path} from finite audio: the model is numerically "
            "unstable on this clip (with reduced precision, try float32).",
        )
    if not np.any(vector):
        return EmbedError(
            "zero_embedding",
            f"{model} produced all-zero features for {path}: a vector without direction, useless for "
            "retrieval. Check the clip (is it silent?) and the model's weights.",
        )
    return None


def _frames(embedder: FrameEmbedder, chunk: np.ndarray, path: Path) -> np.ndarray:
    name, frame_dim = embedder.spec.name, embedder.spec.frame_dim
    if not np.isfinite(chunk).all():
        raise non_finite_audio(path)
    try:
        frames = embedder.frames(chunk[None])
    except Exception as error:  # any failure inside a model is this clip's failure, not the unit's
        raise EmbedError("embedder_error", f"{name} failed on {path}: {type(error).__name__}: {error}") from error
    if frames.ndim != 3 or frames.shape[:2] != (1, frame_dim):
        raise RuntimeError(
            f"embedder {name!r} broke its contract: frames of shape {frames.shape} for one clip, "
            f"expected (1, {frame_dim}, T)"
        )
    return frames


@dataclass(frozen=True)
class ChunkGeometry:
    """What decoding a clip into chunks needs of an embedder."""

    channels: int
    sample_rate: int
    hop_s: float


def require_clip(path: Path) -> None:
    """A clip that is not there yet is the preprocess stage's to make: transient, retried by the next run."""
    if not path.is_file():
        raise EmbedError(
            "missing_clip",
            f"clip {path} does not exist; run the preprocess stage for this dataset first.",
            failure_class=FailureClass.TRANSIENT,
        )


def clip_chunks(embedder: ChunkGeometry, path: Path, chunk_s: float) -> Iterator[np.ndarray]:
    """The clip as float32 ``[channels, n]`` chunks at the embedder's rate (see the module docstring)."""
    require_clip(path)
    chunk_s = max(1, round(chunk_s / embedder.hop_s)) * embedder.hop_s
    count = max(1, math.floor(probe_duration(path) / chunk_s))
    for index in range(count):
        end = (index + 1) * chunk_s if index + 1 < count else None
        audio = decode(path, index * chunk_s, end)
        mapped = Audio(to_channels(audio.samples, embedder.channels), audio.sample_rate)
        yield resample(mapped, embedder.sample_rate).samples
