"""Training throughput of a text embedder into MERT's 76,800-d space, beside its encoder alone, and of the
training data loader alone, beside a sequential read of the same rows.

Reports pairs per second for

* ``encoder``: the sentence encoder's forward and backward pass alone (mean-pooled tokens, a scalar
  loss) on the same captions: what the head and the loss add to is measured against this;
* ``frames`` / ``pooled``: a full optimizer step of ``TextEmbedder`` with that head (encoder, head into
  76,800 dimensions, symmetric InfoNCE against random unit audio vectors, backward, AdamW step);
* ``sequential read`` / ``loader``: one epoch of the training pairs of float16 76,800-d shards written as the
  embed flow writes them (``--loader-shards`` × ``--loader-rows``), read front to back in slices as large as
  the loader's windows and converted to float32, then through :func:`training.data.pair_loader` (block
  shuffle, texts, batches). Freshly written shards are in the page cache when they fit in memory: the figure is
  then the loader's own cost, the part a faster disk cannot remove.

Same device, same batches, one warm-up step each; bf16 autocast on CUDA as in training.
``python benchmarks/train_throughput.py --device cuda --batch-size 64 --steps 20``;
``python benchmarks/train_throughput.py --only loader --loader-shards 2 --loader-rows 10000``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from store.shards import ShardAttributes, ShardWriter
from training.data import SHUFFLE_BLOCKS, EpochBatches, Item, PairDataset, pair_loader, read_unit_rows
from training.loss import ContrastiveLoss
from training.model import DEFAULT_ENCODER, EmbedderConfig, TextEmbedder, autocast, mean_pool

MERT_DIM = 76_800
CAPTION = ("a slow solo piano piece in a minor key, soft and sparse, recorded close; an upbeat funk groove with "
           "slap bass, brass stabs and a busy drum kit at 110 beats per minute")


def captions(batch_size: int, step: int) -> list[str]:
    """Distinct captions per row and step (rotations of one text), all of the same realistic length."""
    words = CAPTION.split()
    return [" ".join(words[(i + step) % len(words):] + words[: (i + step) % len(words)]) for i in range(batch_size)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_encoder(model: TextEmbedder, batch_size: int, steps: int) -> float:
    def step(index: int) -> None:
        texts = captions(batch_size, index)
        batch = model.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(model.device)
        with autocast(model.device):
            tokens = model.encoder(**batch).last_hidden_state
            mean_pool(tokens, batch["attention_mask"]).float().square().mean().backward()
        model.encoder.zero_grad(set_to_none=True)

    return timed(step, model.device, steps)


def time_training(model: TextEmbedder, batch_size: int, steps: int) -> float:
    loss_fn = ContrastiveLoss().to(model.device)
    optimizer = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=1e-4)
    generator = torch.Generator(device="cpu").manual_seed(0)

    def step(index: int) -> None:
        audio = torch.nn.functional.normalize(torch.randn(batch_size, model.config.audio_dim, generator=generator),
                                              dim=-1).to(model.device)
        with autocast(model.device):
            loss = loss_fn(model(captions(batch_size, index)).float(), audio).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, model.device, steps)


def timed(step: object, device: torch.device, steps: int) -> float:
    step(0)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for index in range(1, steps + 1):
        step(index)
    synchronize(device)
    return time.perf_counter() - start


def write_shards(directory: Path, shards: int, rows: int) -> list[Item]:
    """``shards`` float16 MERT-sized shards of ``rows`` rows, chunked as the embed flow chunks them, and one
    training item per row."""
    attrs = ShardAttributes("mert", "1", MERT_DIM, "mean-iqr-delta", 24000, 30.0, 5.0, "0", space="bench")
    block = np.random.default_rng(0).normal(size=(256, MERT_DIM)).astype(np.float16)
    items = []
    for shard in range(shards):
        ids = [f"bench:{shard}-{row}" for row in range(rows)]
        with ShardWriter(directory, attrs, dtype="float16") as writer:
            for start in range(0, rows, len(block)):
                part = ids[start:start + len(block)]
                writer.append(part, block[:len(part)])
        items += [Item(item_id, "bench", item_id, "train", (CAPTION,), (), writer.path, row)
                  for row, item_id in enumerate(ids)]
    return items


def time_sequential_read(items: list[Item]) -> float:
    """Every shard front to back, in slices of a loader window's rows, converted to float32 as the loader
    converts."""
    start = time.perf_counter()
    for path in dict.fromkeys(item.shard for item in items):
        with h5py.File(path, "r") as handle:
            vectors = handle["embedding"]
            step = SHUFFLE_BLOCKS * read_unit_rows(vectors)
            for first in range(0, len(vectors), step):
                torch.from_numpy(vectors[first:first + step]).float()
    return time.perf_counter() - start


def time_loader(items: list[Item], batch_size: int, workers: int) -> tuple[int, float]:
    """Pairs of one epoch through the training loader, and the seconds they took."""
    start = time.perf_counter()
    dataset = PairDataset(items)
    sampler = EpochBatches(len(dataset), batch_size, seed=0, epoch=0, blocks=dataset.blocks)
    pairs = sum(len(texts) for texts, _ in pair_loader(dataset, sampler, num_workers=workers))
    dataset.reader.close()
    return pairs, time.perf_counter() - start


def loader_rates(args: argparse.Namespace) -> dict[str, float]:
    """The best of ``--repeats`` alternating epochs of each: on a shared machine the others' load comes and goes."""
    rates: dict[str, float] = {"sequential read": 0.0, "loader": 0.0}
    with tempfile.TemporaryDirectory(dir=args.shard_dir) as directory:
        items = write_shards(Path(directory), args.loader_shards, args.loader_rows)
        for _ in range(args.repeats):
            rates["sequential read"] = max(rates["sequential read"], len(items) / time_sequential_read(items))
            pairs, seconds = time_loader(items, args.batch_size, args.loader_workers)
            rates["loader"] = max(rates["loader"], pairs / seconds)
    return rates


def model_rates(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    rates = {}
    for head in ("frames", "pooled"):
        model = TextEmbedder(EmbedderConfig(audio_dim=MERT_DIM, head=head, encoder=args.encoder)).to(device)
        model.train(True)
        if head == "frames":
            rates["encoder"] = args.batch_size * args.steps / time_encoder(model, args.batch_size, args.steps)
        rates[head] = args.batch_size * args.steps / time_training(model, args.batch_size, args.steps)
        del model
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--only", choices=("model", "loader"), help="one of the two measurements (default both)")
    parser.add_argument("--loader-shards", type=int, default=2)
    parser.add_argument("--loader-rows", type=int, default=10_000, help="rows per shard")
    parser.add_argument("--loader-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each read, the best counts")
    parser.add_argument("--shard-dir", help="where the shards are written (default: the temporary directory)")
    args = parser.parse_args()
    device = torch.device(args.device)
    console = Console()

    if args.only != "loader":
        rates = model_rates(args, device)
        console.print(f"{args.device}: batches of {args.batch_size} captions, {args.steps} timed steps, "
                      f"audio space {MERT_DIM:,}-d (MERT)")
        table = Table("path", "pairs/s", "vs encoder alone")
        for name, rate in rates.items():
            table.add_row(name, f"{rate:.1f}", f"{rate / rates['encoder']:.2f}")
        console.print(table)
    if args.only != "model":
        rates = loader_rates(args)
        console.print(f"loader: {args.loader_shards} float16 shards x {args.loader_rows:,} rows x {MERT_DIM:,}-d, "
                      f"batches of {args.batch_size}, {args.loader_workers} workers, best of {args.repeats} epochs",
                      soft_wrap=True)
        table = Table("read", "pairs/s", "vs sequential read")
        for name, rate in rates.items():
            table.add_row(name, f"{rate:.1f}", f"{rate / rates['sequential read']:.2f}")
        console.print(table)


if __name__ == "__main__":
    main()
