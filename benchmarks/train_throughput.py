"""Training throughput of a text embedder into MERT's 76,800-d space, beside its encoder alone.

Reports pairs per second for

* ``encoder``: the sentence encoder's forward and backward pass alone (mean-pooled tokens, a scalar
  loss) on the same captions: what the head and the loss add to is measured against this;
* ``frames`` / ``pooled``: a full optimizer step of ``TextEmbedder`` with that head (encoder, head into
  76,800 dimensions, symmetric InfoNCE against random unit audio vectors, backward, AdamW step).

Same device, same batches, one warm-up step each; bf16 autocast on CUDA as in training.
``python benchmarks/train_throughput.py --device cuda --batch-size 64 --steps 20``.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    args = parser.parse_args()
    device = torch.device(args.device)

    rates = {}
    for head in ("frames", "pooled"):
        model = TextEmbedder(EmbedderConfig(audio_dim=MERT_DIM, head=head, encoder=args.encoder)).to(device)
        model.train(True)
        if head == "frames":
            rates["encoder"] = args.batch_size * args.steps / time_encoder(model, args.batch_size, args.steps)
        rates[head] = args.batch_size * args.steps / time_training(model, args.batch_size, args.steps)
        del model

    console = Console()
    console.print(f"{args.device}: batches of {args.batch_size} captions, {args.steps} timed steps, "
                  f"audio space {MERT_DIM:,}-d (MERT)")
    table = Table("path", "pairs/s", "vs encoder alone")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:.1f}", f"{rate / rates['encoder']:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
