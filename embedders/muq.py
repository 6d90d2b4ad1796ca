"""``muq``: MuQ-MuLan-large audio embeddings, one 512-d unit vector per window (→ 1536 enriched).

MuQ-MuLan was trained on 10 s clips (``clip_secs``) and gives one vector per clip, so a frame here is
one window of audio. The enrichment's spread and drift need several frames, so windows overlap, as
the architecture asks: 10 s windows every 2.5 s (a quarter window), and for inputs shorter than 20 s,
windows of half the input every quarter of that, so that every input of 20 s or less gives five
frames. A remainder past the last full step becomes one more window, the input's *last* ``window``
samples, so the tail is covered and every window is real audio: 25 s → windows starting at 0, 2.5, …,
15 s, ``T = 7``; 30 s → ``T = 9``; 12 s → 6 s windows every 1.5 s, ``T = 5``. An input of fewer than
1025 samples gives no frame (``T = 0``): the mel spectrogram reflect-pads 1024 samples on each side,
which needs a longer input. The package's own ``MuQMuLan.forward`` instead cuts disjoint 10 s clips,
fills a short one with audio from the track start and averages the clips' vectors into one; here each
window keeps its vector for the enrichment. All windows of a batch go through ``get_audio_latents`` in
one call per window length.

Loading never downloads (see :mod:`embedders.weights`). ``MuQMuLan``'s constructor builds its audio
backbone with ``MuQ.from_pretrained(audio_model.name)`` and its text tower with
``XLMRobertaModel.from_pretrained(text_model.name)``, by default from the Hub; so all three repositories
are located on this machine and the two names in MuQ-MuLan-large's ``config.json`` are replaced by the
located directories (whose paths still contain "muq" and "xlm-roberta", which the constructor
dispatches on). The checkpoint then overwrites every weight of both; what they contribute is their
architecture and the backbone's config, whose ``stat`` (the mel normalisation) is not a weight. The
checkpoint loads strictly: the hub mixin's default ``strict=False`` would leave a renamed or missing
weight silently random.

The text tower (XLM-RoBERTa and its head, 329 M of the 709 M parameters) is then dropped: audio
embeddings never use it, and on the device it would nearly double the weights' memory.

On CUDA the model runs on float32 waveforms under bf16 autocast. Casting the model to bf16 instead
crashes: MuQ casts its mel spectrogram to fp16 whenever the input is 16-bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from muq import MuQMuLan
from safetensors.torch import load_file

from embedders.weights import MUQ, MUQ_BACKBONE, MUQ_TEXT, LocatedWeights, locate_weights

MIN_SAMPLES = 1025
"""Shortest input MuQ's mel front end takes: ``n_fft / 2`` samples of reflect padding need more input."""
HOPS_PER_WINDOW = 4
MIN_FRAMES = 1 + HOPS_PER_WINDOW
"""Frames an input of up to two windows gives (one window plus four hops spans two windows)."""


class MuqEmbedder:
    """:class:`embedders.base.Embedder` for MuQ-MuLan-large, plus :meth:`frames_tensor` for GPU workers."""

    name = MUQ.name
    channels = 1

    def __init__(self, weights: Path | None = None, *, device: str | torch.device = "cpu") -> None:
        located = locate_weights(MUQ, weights)
        self.revision = located.revision
        self.weights_sha256 = located.sha256
        model = _load_model(located)
        self.sample_rate = int(model.sr)
        self.window = round(model.sr * model.clip_secs)
        self.window_s = float(model.clip_secs)
        self.hop_s = self.window_s / HOPS_PER_WINDOW
        self.device = torch.device(device)
        self.mulan = _audio_only(model).to(self.device).eval()
        self.frame_dim = int(self.mulan.dim_latent)

    def frame_count(self, samples: int) -> int:
        return len(self.window_starts(samples)[1])

    def window_starts(self, samples: int) -> tuple[int, list[int]]:
        """The window length and the window starts, in samples, for an input of ``samples`` (see the module
        docstring); no starts when the input is too short for a frame."""
        window = min(self.window, max(MIN_SAMPLES, samples // 2))
        if samples < window:
            return window, []
        starts = list(range(0, samples - window + 1, max(1, window // HOPS_PER_WINDOW)))
        if starts[-1] + window < samples:
            starts.append(samples - window)
        return window, starts

    def frames(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: float32 ``[B, 1, N]`` at 24 kHz; returns float32 ``[B, 512, T]``, unit vectors."""
        if batch.ndim != 3 or batch.shape[1] != self.channels:
            raise ValueError(f"muq takes mono batches [B, 1, N], got shape {batch.shape}")
        return self.frames_tensor(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).cpu().numpy()

    @torch.inference_mode()
    def frames_tensor(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio``: float ``[B, 1, N]`` at 24 kHz on any device; returns float32 ``[B, 512, T]`` on the
        model's device, one unit vector per window (see the module docstring). Runs under bf16 autocast on
        CUDA. Fewer than :data:`MIN_SAMPLES` samples give ``T = 0``."""
        audio = audio[:, 0].to(self.device, torch.float32)
        batch, samples = audio.shape
        length, starts = self.window_starts(samples)
        if not starts:
            return audio.new_zeros((batch, self.frame_dim, 0))
        windows = torch.stack([audio[:, start : start + length] for start in starts], dim=1)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            latents = self.mulan.get_audio_latents(windows.reshape(batch * len(starts), length))
        return latents.float().reshape(batch, len(starts), self.frame_dim).transpose(1, 2)


def _load_model(located: LocatedWeights) -> MuQMuLan:
    """``MuQMuLan`` built from the located repositories, with every weight from the checkpoint."""
    model = MuQMuLan(_config(located))
    try:
        model.load_state_dict(_state_dict(located.weights_file), strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"the weights in {located.weights_file} do not match MuQMuLan exactly ({error}); they are not "
            "MuQ-MuLan-large weights, or this muq version builds the model differently."
        ) from error
    return model


def _config(located: LocatedWeights) -> dict[str, Any]:
    """The checkpoint's config, its backbone and text tower pointed at the located directories. The hub
    mixin accepts the config at the top level of ``config.json`` or under a ``config`` key; so does this."""
    fields = json.loads((located.directory / "config.json").read_text())
    config = fields.get("config", fields)
    backbone = located.requires[MUQ_BACKBONE.repo_id].directory
    text = located.requires[MUQ_TEXT.repo_id].directory
    return config | {
        "audio_model": config["audio_model"] | {"name": str(backbone)},
        "text_model": config["text_model"] | {"name": str(text)},
    }


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _audio_only(model: MuQMuLan) -> torch.nn.Module:
    """The ``MuLanModel`` inside, without its text tower (see the module docstring)."""
    mulan = model.mulan_module
    mulan.text = None
    mulan.text_to_latents = None
    return mulan
