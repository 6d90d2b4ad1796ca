"""How close float16-stored vectors are to the float32 ones they replace, for MERT's and MuQ's sizes.

Frames are generated the way the models' frames look: MERT's ``[25600, T]`` (25 hidden states of 1,024, each
dimension with its own scale spread over two decades, a few "massive activation" dimensions a hundred times the
rest, windows that drift slowly because they overlap by 25 of 30 s) and MuQ's ``[512, T]`` (averages of unit
MuLan latents). They are enriched by :func:`embedders.enrichment.enrich`, written to a float16 shard by
:class:`store.shards.ShardWriter`, read back with :meth:`store.shards.Shard.embeddings` (float32) and compared
with the float32 vectors by cosine. Run: ``.venv/bin/python tests/measure_float16_storage.py --tracks 200``.

Arithmetic bounds it too: float16 rounds a normal number to within 2^-11 of itself and a subnormal to within
2^-25, so a unit vector of n values moves by at most sqrt(2^-22 + n·2^-50), and its cosine to the original stays
above 1 - 1.2e-7 for n = 76,800.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from embedders.enrichment import enrich
from store.shards import ShardAttributes, ShardWriter, open_shard

MODELS = {"mert": 25_600, "muq": 512}
"""Frame size per model; stored vectors are three times as wide (76,800 and 1,536)."""
WINDOWS = (1, 2, 9, 43, 200)
"""Frames per track: a clip of one window, short tracks, a 4-minute track in MERT's 5 s hops, a long one."""


def model_like_frames(frame_dim: int, windows: int, rng: np.random.Generator) -> np.ndarray:
    """``[1, frame_dim, windows]`` frames with per-dimension scales over two decades, 0.2 % of dimensions a
    hundred times larger, and an AR(1) drift between overlapping windows."""
    scale = rng.lognormal(0.0, 1.0, frame_dim)
    scale[rng.choice(frame_dim, max(1, frame_dim // 500), replace=False)] *= 100.0
    base = rng.normal(0.0, 1.0, frame_dim) * scale
    drift = np.empty((frame_dim, windows))
    drift[:, 0] = rng.normal(0.0, 1.0, frame_dim)
    for step in range(1, windows):
        drift[:, step] = 0.8 * drift[:, step - 1] + 0.6 * rng.normal(0.0, 1.0, frame_dim)
    return (base[:, None] + 0.2 * scale[:, None] * drift)[None].astype(np.float32)


def enriched_tracks(frame_dim: int, tracks: int, seed: int) -> Iterator[np.ndarray]:
    """``tracks`` enriched vectors (float32, unit norm), cycling through :data:`WINDOWS`."""
    rng = np.random.default_rng(seed)
    for track in range(tracks):
        yield enrich(model_like_frames(frame_dim, WINDOWS[track % len(WINDOWS)], rng))[0]


def stored_cosines(vectors: np.ndarray, directory: Path, dtype: str = "float16") -> np.ndarray:
    """Cosine of each row of ``vectors`` to itself after a round trip through a ``dtype`` shard."""
    attrs = ShardAttributes("m", "1", vectors.shape[1], "e", 24_000, 30.0, 5.0, "0", space="s")
    with ShardWriter(directory, attrs, dtype=dtype) as writer:
        writer.append([f"d:{row}" for row in range(len(vectors))], vectors)
    stored = open_shard(writer.path).embeddings().astype(np.float64)
    original = vectors.astype(np.float64)
    return (stored * original).sum(axis=1) / (np.linalg.norm(stored, axis=1) * np.linalg.norm(original, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=200, help="vectors per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for model, frame_dim in MODELS.items():
            vectors = np.stack(list(enriched_tracks(frame_dim, args.tracks, args.seed)))
            cosines = stored_cosines(vectors, Path(folder) / model)
            print(f"{model} ({3 * frame_dim} values, {args.tracks} vectors): float16 cosine to float32 "
                  f"min {cosines.min():.9f}, mean {cosines.mean():.9f}; 1 - min = {1 - cosines.min():.2e}; "
                  f"{3 * frame_dim * 2:,} bytes a vector instead of {3 * frame_dim * 4:,}")


if __name__ == "__main__":
    main()
