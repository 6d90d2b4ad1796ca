"""``mert``: MERT-v1-330M frame features, 25 hidden states × 1024 per 75 Hz frame (→ 76 800 enriched).

The MERT snapshot ships remote code (``MERTModel``), but for v1-330M that model *is* transformers'
own ``HubertModel``: no CQT branch, and with ``do_stable_layer_norm`` the encoder is HuBERT's; its
weights load into ``HubertModel`` with no missing or unexpected keys and give identical hidden
states (shared/embedders.md §2). So no remote code runs here, which also avoids the remote code's
breakage on newer transformers. A config that switches on what HuBERT lacks is refused rather than
silently computed differently, and so is a checkpoint that leaves any weight unloaded.

Input is normalised as the snapshot's ``preprocessor_config.json`` says (``do_normalize``: per-clip
zero mean, unit variance, as ``Wav2Vec2FeatureExtractor`` does), then the model runs on chunks of
about ``chunk_s`` seconds: attention is quadratic in length and MERT was trained on 5 s. Chunks
overlap by ``window − hop`` samples so that the chunks' frames together are exactly as many as the
whole clip's, ``T = ⌊(N − 400) / 320⌋ + 1``; the remainder joins the last chunk, which runs to the
clip's last sample. (The first convolution's GroupNorm normalises over the whole input, so every
sample given to the model, even one past the last full frame, affects all frames: a clip that fits
in one chunk is run whole, exactly as the model would run it.)

transformers 5 changed ``hidden_states[-1]`` of this encoder to the state *before* the final
LayerNorm (4.57: after it, equal to ``last_hidden_state``, as in the original model). The 25th
state is therefore always taken from ``last_hidden_state``, which means the same in both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from embedders.weights import MERT, locate_weights

CHUNK_S = 30.0
_NORM_EPS = 1e-7
"""``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``'s variance floor."""


class MertEmbedder:
    """:class:`embedders.base.Embedder` for MERT-v1-330M, plus :meth:`frames_tensor` for GPU workers."""

    name = MERT.name
    channels = 1

    def __init__(
        self, weights: Path | None = None, *, device: str | torch.device = "cpu", chunk_s: float = CHUNK_S
    ) -> None:
        located = locate_weights(MERT, weights)
        self.revision = located.revision
        self.weights_sha256 = located.sha256
        config = _hubert_config(located.directory / "config.json")
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(located.directory)
        self.sample_rate = int(extractor.sampling_rate)
        self.normalize = bool(extractor.do_normalize)
        self.window, self.hop = _receptive_field(config.conv_kernel, config.conv_stride)
        self.window_s = self.window / self.sample_rate
        self.hop_s = self.hop / self.sample_rate
        self.frame_dim = (config.num_hidden_layers + 1) * config.hidden_size
        self.chunk_frames = max(1, round(chunk_s / self.hop_s))
        self.device = torch.device(device)
        self.model = _load_model(located.directory, config).to(self.device).eval()

    def frame_count(self, samples: int) -> int:
        return 0 if samples < self.window else (samples - self.window) // self.hop + 1

    def frames(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: float32 ``[B, 1, N]`` at 24 kHz; returns float32 ``[B, frame_dim, T]``."""
        if batch.ndim != 3 or batch.shape[1] != self.channels:
            raise ValueError(f"mert takes mono batches [B, 1, N], got shape {batch.shape}")
        return self.frames_tensor(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).cpu().numpy()

    @torch.inference_mode()
    def frames_tensor(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio``: float ``[B, 1, N]`` at 24 kHz on any device; returns float32 ``[B, frame_dim, T]`` on the
        model's device. Runs under bf16 autocast on CUDA. Fewer than ``window`` samples give ``T = 0``."""
        audio = audio[:, 0].to(self.device, torch.float32)
        total = self.frame_count(audio.shape[-1])
        if total == 0:
            return audio.new_zeros((audio.shape[0], self.frame_dim, 0))
        if self.normalize:
            audio = _zero_mean_unit_variance(audio)
        firsts = [index * self.chunk_frames for index in range(max(1, total // self.chunk_frames))]
        ends = [(first - 1) * self.hop + self.window for first in firsts[1:]] + [audio.shape[-1]]
        chunks = [audio[:, first * self.hop : end] for first, end in zip(firsts, ends, strict=True)]
        return torch.cat([self._chunk_frames(chunk) for chunk in chunks], dim=-1)

    def _chunk_frames(self, chunk: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            output = self.model(chunk, output_hidden_states=True)
        states = (*output.hidden_states[:-1], output.last_hidden_state)
        return torch.cat([state.float() for state in states], dim=-1).transpose(1, 2)


def _hubert_config(path: Path) -> HubertConfig:
    """The snapshot's config as a ``HubertConfig``, refused where ``MERTModel`` would compute differently."""
    fields = json.loads(path.read_text())
    if fields.get("feature_extractor_cqt"):
        raise ValueError(f"{path} enables MERT's CQT features, which HubertModel lacks; mert cannot run it.")
    if fields.get("deepnorm") and not fields.get("do_stable_layer_norm"):
        raise ValueError(f"{path} uses MERT's DeepNorm encoder, which HubertModel lacks; mert cannot run it.")
    return HubertConfig.from_dict(fields)


def _load_model(directory: Path, config: HubertConfig) -> HubertModel:
    model, info = HubertModel.from_pretrained(directory, config=config, output_loading_info=True)
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    problems = {kind: info[kind] for kind in kinds if info[kind]}
    if problems:
        raise ValueError(
            f"the weights in {directory} do not match HubertModel exactly ({problems}); they are not "
            "MERT-v1-330M weights, or this transformers version reads them differently."
        )
    return model


def _receptive_field(kernels: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, int]:
    """Samples one frame sees and samples between frames, from the convolutional feature encoder."""
    window, hop = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        window += (kernel - 1) * hop
        hop *= stride
    return window, hop


def _zero_mean_unit_variance(audio: torch.Tensor) -> torch.Tensor:
    """Per clip, as ``Wav2Vec2FeatureExtractor`` normalises; statistics in float64 for long clips."""
    wide = audio.double()
    mean = wide.mean(dim=-1, keepdim=True)
    variance = wide.var(dim=-1, unbiased=False, keepdim=True)
    return ((wide - mean) / torch.sqrt(variance + _NORM_EPS)).float()
