"""Throughput of the full embedding path (files → shard) against the model alone, measured in one run.

For each model and each kind of input — ``--clips`` clips of 30 s and ``--tracks`` tracks of 4 minutes,
44.1 kHz 16-bit stereo FLAC — it reports items per second for

* ``prepare``: the input side alone (``TorchRuntime.tracks``: worker processes decode, mix to mono, resample
  with torchaudio as Navidrome does), no model: the most the runtime can feed;
* ``model``: the bare forward passes (``TrackEmbedder.forward``) on the same pieces, prepared beforehand and
  already on the device, ``batch_size`` at a time: the device's limit;
* ``full``: the path the embed flow runs, decoding in workers, forward passes, assembly and enrichment on
  the device, and the background writer appending to a real HDF5 shard.

``full / model`` near 1 means the device, not the input side, is the limit. One batch runs before timing.
Each model computes Navidrome's vectors, with its costs: a 30 s clip is one 120 s MuQ window whose nine
silent 10 s clips share one latent (so it costs three clip forwards), one padded 30 s MERT window, and three
10 s Music2Latent chunks; a 4-minute track is 9 MuQ windows (49 distinct clips), 43 MERT windows and 24 chunks.

``--size full`` builds each model at its published size with random weights (throughput does not depend on
the weight values; MuQ-MuLan's text tower, dropped after loading, stays tiny), so no download is needed;
``--size tiny`` uses the test suite's tiny configurations, which make the input side the thing measured;
``--weights-root DIR`` reads real weights from ``DIR/<model>``. On a GPU::

    python benchmarks/embed_throughput.py --device cuda --size full
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from rich.console import Console
from rich.table import Table

from embedders import get_embedder
from embedders.runtime import shard_attributes
from embedders.torch_runtime import TorchRuntime, TrackEmbedder, stack_pieces
from store.shard_stream import write_results
from store.shards import ShardWriter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "models"))

CLIP_RATE = 44_100
MODELS = ("muq", "mert", "music2latent")
MERT_V1_330M = {
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    "conv_dim": (512,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_bias": False, "feat_extract_norm": "group", "do_stable_layer_norm": True,
    "feat_proj_layer_norm": True,
}
"""MERT-v1-330M's config.json fields that shape the network (shared/embedders.md §2)."""
MUQ_LARGE_BACKBONE = {
    "conv_dim": 512, "encoder_dim": 1024, "encoder_depth": 12,
    "w2v2_config": {"num_attention_heads": 16, "intermediate_size": 4096, "conv_depthwise_kernel_size": 31,
                    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16},
}
"""MuQ-large-msd-iter's shape (shared/embedders.md §1: 1024 wide, 12 conformer layers; its config.json could not
be read offline, so the conformer's kernel sizes are the wav2vec2-conformer defaults)."""
MULAN_AUDIO_HEAD = {"dim": 768, "tf_depth": 8, "heads": 8, "dim_head": 64}
"""The ``muq`` dataclass defaults of MuLan's audio transformer (shared/embedders.md §1)."""


def write_items(folder: Path, count: int, seconds: float) -> list[tuple[str, Path]]:
    """``count`` stereo FLAC files of ``seconds``: a chord that changes every two seconds, over noise."""
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * CLIP_RATE)) / CLIP_RATE
    root = 220.0 * 2 ** (rng.integers(0, 12, size=int(seconds // 2) + 1) / 12)[(t // 2).astype(int)]
    chord = sum(0.2 * np.sin(2 * np.pi * root * ratio * t) for ratio in (1.0, 1.26, 1.5))
    folder.mkdir(parents=True)
    items = []
    for index in range(count):
        audio = np.stack([chord + 0.05 * rng.standard_normal(t.size) for _ in range(2)], axis=1)
        path = folder / f"item-{index:04d}.flac"
        sf.write(path, audio.astype(np.float32), CLIP_RATE, subtype="PCM_16")
        items.append((f"bench:{index}", path))
    return items


def random_weights(model: str, folder: Path, size: str) -> Path:
    """``model``'s weights laid out as the real ones are, random, at full or tiny size."""
    if size == "tiny":
        return tiny_model_weights(model, folder)
    folder.mkdir(parents=True)
    if model == "mert":
        from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

        HubertModel(HubertConfig(**MERT_V1_330M)).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(sampling_rate=24_000, do_normalize=True).save_pretrained(folder)
    elif model == "music2latent":
        from music2latent.models import UNet

        torch.save({"gen_state_dict": UNet().state_dict()}, folder / "music2latent.pt")
    else:
        import tiny_muq

        backbone = tiny_muq.BACKBONE | MUQ_LARGE_BACKBONE
        backbone["w2v2_config"] = tiny_muq.BACKBONE["w2v2_config"] | MUQ_LARGE_BACKBONE["w2v2_config"]
        tiny_muq.write_repos(folder, backbone_config=backbone, head=MULAN_AUDIO_HEAD)
    return folder


def tiny_model_weights(model: str, folder: Path) -> Path:
    """The test suite's tiny configurations (tests/models), random weights."""
    import tiny_muq
    import tiny_weights

    if model == "mert":
        tiny_weights.write_snapshot(folder)
    elif model == "muq":
        tiny_muq.write_repos(folder)
    else:
        import music2latent.models

        for name, value in tiny_weights.REDUCED_UNET.items():  # the adapter builds its UNet from these globals too
            setattr(music2latent.models, name, value)
        tiny_weights.write_music2latent_checkpoint(folder)
    return folder


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_prepare(runtime: TorchRuntime, items: list[tuple[str, Path]]) -> float:
    start = time.perf_counter()
    for _track in runtime.tracks(items):
        pass
    return time.perf_counter() - start


def time_model(runtime: TorchRuntime, items: list[tuple[str, Path]]) -> float:
    """Forward passes only, over pieces prepared beforehand and already on the device."""
    embedder: TrackEmbedder = runtime.embedder
    groups: dict[tuple, list] = {}
    for track in runtime.tracks(items):
        for piece in embedder.plan(track.audio.shape[-1]).pieces:
            groups.setdefault(piece.key, []).append((track.audio, piece))
    batches = [(key, stack_pieces(entries[start:start + runtime.batch_size]).to(embedder.device))
               for key, entries in groups.items() for start in range(0, len(entries), runtime.batch_size)]
    with torch.inference_mode():
        embedder.forward(batches[0][1], batches[0][0])  # warm-up
        synchronize(embedder.device)
        start = time.perf_counter()
        for key, batch in batches:
            embedder.forward(batch, key)
        synchronize(embedder.device)
    return time.perf_counter() - start


def time_full(runtime: TorchRuntime, items: list[tuple[str, Path]], folder: Path) -> float:
    start = time.perf_counter()
    with ShardWriter(folder, shard_attributes(runtime.embedder)) as writer:
        _done, failures = write_results(runtime.embed(items), writer, chunk_rows=256)
    if failures:
        raise SystemExit(f"{len(failures)} items failed, first: {failures[0].reason}: {failures[0].detail}")
    return time.perf_counter() - start


def measure(runtime: TorchRuntime, items: list[tuple[str, Path]], folder: Path) -> dict[str, float]:
    time_full(runtime, items[: max(1, min(len(items), 2))], folder / "warm-up")
    return {"prepare": len(items) / time_prepare(runtime, items), "model": len(items) / time_model(runtime, items),
            "full": len(items) / time_full(runtime, items, folder / "shards")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=MODELS, help="repeatable (default: all three)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="random weights of this size")
    parser.add_argument("--weights-root", type=Path, help="real weights: DIR/<model> (instead of random ones)")
    parser.add_argument("--precision", choices=("reference", "bf16"), default="reference")
    parser.add_argument("--clips", type=int, default=64, help="30 s clips (0: skip)")
    parser.add_argument("--tracks", type=int, default=8, help="4-minute tracks (0: skip)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader worker processes")
    parser.add_argument("--batch-size", type=int, help="pieces per forward pass (default: from free memory)")
    args = parser.parse_args()

    console = Console()
    table = Table("model", "items", "pieces/batch", "prepare items/s", "model items/s", "full items/s",
                  "full / model", title=f"embedding throughput on {args.device} ({args.size} size, {args.precision})")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        inputs = {f"{args.clips} × 30 s": write_items(folder / "clips", args.clips, 30.0) if args.clips else [],
                  f"{args.tracks} × 4 min": write_items(folder / "tracks", args.tracks, 240.0) if args.tracks else []}
        for model in args.model or MODELS:
            weights = (args.weights_root / model if args.weights_root
                       else random_weights(model, folder / "weights" / model, args.size))
            embedder = get_embedder(model, weights=weights, device=args.device, precision=args.precision)
            for label, items in inputs.items():
                if not items:
                    continue
                runtime = TorchRuntime(embedder, batch_size=args.batch_size, num_workers=args.workers)
                rates = measure(runtime, items, folder / "out" / model / label.replace(" ", ""))
                table.add_row(model, label, str(runtime.batch_size), *(f"{rates[k]:.2f}" for k in rates),
                              f"{rates['full'] / rates['model']:.2f}")
                console.print(f"{model}, {label}: " + ", ".join(f"{k} {v:.2f}/s" for k, v in rates.items()))
            if embedder.device.type == "cuda":
                console.print(f"{model}: peak device memory "
                              f"{torch.cuda.max_memory_allocated(embedder.device) / 2**30:.2f} GiB")
                torch.cuda.reset_peak_memory_stats(embedder.device)
            del embedder
    console.print(table)


if __name__ == "__main__":
    main()
