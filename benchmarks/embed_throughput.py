"""Throughput of the full embedding path (clip files → shard) beside its two limits, measured in one run.

Writes ``--clips`` canonical clips (44.1 kHz 16-bit stereo FLAC, a chord over noise) of ``--seconds``
each to a temporary folder and reports clips per second for

* ``decode``: the runtime's input side alone (``TorchRuntime.batches``: worker processes decode, map
  channels, resample and window; windows are grouped and pinned), no model: the most it can feed;
* ``model``: the bare forward pass (``TorchRuntime.forward_windows``) on the same windows already
  decoded and on the device, in batches of the runtime's size, no enrichment: the GPU limit;
* ``runtime``: the full path as the embed flow runs it, decoding, forward, enrichment on the device and
  the background writer appending to a real HDF5 shard.

The goal of the runtime is that the GPU, not decoding, is the limit: ``runtime / model`` near 1 and
``decode`` well above ``model``. One batch runs before timing (CUDA context, cuDNN autotuning).
``--random-weights`` builds the model at full size from the real configuration with random weights
(throughput does not depend on the weight values), so no download is needed:
``python benchmarks/embed_throughput.py --device cuda --model mert --random-weights``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from rich.console import Console
from rich.table import Table

from embedders.mert import MertEmbedder
from embedders.music2latent import Music2LatentEmbedder
from embedders.runtime import shard_attributes
from embedders.torch_runtime import WINDOW_S, TorchRuntime
from store.shard_stream import write_results
from store.shards import ShardWriter

CLIP_RATE = 44_100
MERT_V1_330M = {
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    "conv_dim": (512,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_bias": False, "feat_extract_norm": "group", "do_stable_layer_norm": True,
    "feat_proj_layer_norm": True,
}
"""MERT-v1-330M's config.json fields that shape the network (shared/embedders.md §2)."""


def write_clips(folder: Path, count: int, seconds: float) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * CLIP_RATE)) / CLIP_RATE
    chord = sum(0.2 * np.sin(2 * np.pi * hz * t) for hz in (261.63, 329.63, 392.0))
    clips = []
    for index in range(count):
        audio = np.stack([chord + 0.05 * rng.standard_normal(t.size) for _ in range(2)], axis=1)
        path = folder / f"clip-{index:04d}.flac"
        sf.write(path, audio.astype(np.float32), CLIP_RATE, subtype="PCM_16")
        clips.append((f"bench:{index}", path))
    return clips


def random_weights(model: str, folder: Path) -> Path:
    """A full-size snapshot of ``model`` with random weights, laid out as the real one is."""
    folder.mkdir()
    if model == "mert":
        from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

        HubertModel(HubertConfig(**MERT_V1_330M)).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(sampling_rate=24_000, do_normalize=True).save_pretrained(folder)
    else:
        from music2latent.models import UNet

        torch.save({"gen_state_dict": UNet().state_dict()}, folder / "music2latent.pt")
    return folder


def load(model: str, weights: Path | None, device: str) -> MertEmbedder | Music2LatentEmbedder:
    embedder = MertEmbedder if model == "mert" else Music2LatentEmbedder
    return embedder(weights, device=device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_decode(runtime: TorchRuntime, clips: list[tuple[str, Path]]) -> float:
    start = time.perf_counter()
    for _batch in runtime.batches(clips):
        pass
    return time.perf_counter() - start


def time_model(runtime: TorchRuntime, clips: list[tuple[str, Path]]) -> float:
    """Forward passes only, over windows decoded beforehand and already on the device."""
    device = runtime.embedder.device
    groups = [group.audio.to(device) for batch in runtime.batches(clips) for group in batch.groups]
    with torch.inference_mode():
        runtime.forward_windows(groups[0][: runtime.batch_size])  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for audio in groups:
            for part in audio.split(runtime.batch_size):
                runtime.forward_windows(part)
        synchronize(device)
    return time.perf_counter() - start


def time_runtime(runtime: TorchRuntime, clips: list[tuple[str, Path]], folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    with ShardWriter(folder, shard_attributes(runtime.embedder)) as writer:
        done, failures = write_results(runtime.embed(clips), writer, chunk_rows=256)
    if failures:
        raise SystemExit(f"{len(failures)} clips failed, first: {failures[0].reason}: {failures[0].detail}")
    return time.perf_counter() - start, len(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mert", "music2latent"), default="mert")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", type=Path, help="snapshot directory (default: the Hugging Face cache)")
    parser.add_argument("--random-weights", action="store_true", help="full-size model with random weights")
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length (windows of 10 s each)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader worker processes")
    parser.add_argument("--batch-size", type=int, help="windows per forward pass (default: from free memory)")
    args = parser.parse_args()

    console = Console()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        weights = random_weights(args.model, folder / "weights") if args.random_weights else args.weights
        embedder = load(args.model, weights, args.device)
        runtime = TorchRuntime(embedder, batch_size=args.batch_size, num_workers=args.workers)
        clips = write_clips(folder, args.clips, args.seconds)
        console.print(f"{args.model} on {embedder.device}: {args.clips} clips of {args.seconds:g} s, "
                      f"{WINDOW_S:g} s windows, {runtime.batch_size} windows per forward pass, "
                      f"{args.workers} workers")
        time_runtime(runtime, clips[: max(1, runtime.batch_size)], folder / "warm-up")
        decode_s = time_decode(runtime, clips)
        model_s = time_model(runtime, clips)
        runtime_s, done = time_runtime(runtime, clips, folder / "shards")

    rates = {"decode": args.clips / decode_s, "model": args.clips / model_s, "runtime": done / runtime_s}
    table = Table("path", "seconds", "clips/s", "audio s per s")
    for name, rate in rates.items():
        table.add_row(name, f"{args.clips / rate:.2f}", f"{rate:.2f}", f"{rate * args.seconds:.1f}")
    console.print(table)
    limit = min(rates["decode"], rates["model"])
    console.print(f"runtime / model = {rates['runtime'] / rates['model']:.2f}; "
                  f"runtime / min(decode, model) = {rates['runtime'] / limit:.2f}; "
                  f"the limit is {'the model' if rates['model'] <= rates['decode'] else 'decoding'}; "
                  f"batch size after any out-of-memory fallback: {runtime.batch_size}")
    if embedder.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(embedder.device) / 2**30
        console.print(f"peak device memory: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
