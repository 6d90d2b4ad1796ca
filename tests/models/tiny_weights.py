"""Tiny random-weight models written the way the real weights are laid out, so adapters and runtimes load them
offline with production code: MERT-style snapshots (transformers' ``HubertModel``) and Music2Latent checkpoints
(the package's real ``UNet``, narrowed through its own hyper-parameter globals). Shared by the model tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from embedders.windows import Piece

HIDDEN, LAYERS, CONV_CHANNELS = 32, 2, 8
FRAME_DIM = (LAYERS + 1) * HIDDEN
SMALL = {"hidden": 16, "layers": 1, "conv_channels": 2}
"""An even smaller MERT for tests that run hundreds of 30 s windows (its frames: ``(1 + 1) · 16`` rows)."""
RATE = 24_000
REDUCED_UNET = {"base_channels": 4, "multipliers_list": [1, 1, 1, 1, 1], "bottleneck_base_channels": 32,
                "num_bottleneck_layers": 1, "cond_channels": 16, "attention_list_encoder": [0, 0, 0, 0, 0]}
"""Music2Latent's ``UNet`` hyper-parameters (module globals of ``music2latent.models``) for a narrow network
without attention (a 10 s chunk costs about 0.3 s on a CPU core instead of 0.6); its 64 latent channels and its
STFT geometry are kept."""
MERT_ONLY_FIELDS = {
    "model_type": "mert_model",
    "architectures": ["MERTModel"],
    "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
    "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 336,
    "deepnorm": False,
    "attention_relax": 32.0,
    "sample_rate": RATE,
}


def tiny_model(
    seed: int = 0, *, hidden: int = HIDDEN, layers: int = LAYERS, conv_channels: int = CONV_CHANNELS
) -> HubertModel:
    """MERT-v1-330M's architecture (conv stack, stable layer norm, projection norm), tiny width and depth."""
    torch.manual_seed(seed)
    config = HubertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=37,
        conv_dim=(conv_channels,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=True, feat_proj_layer_norm=True,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    return HubertModel(config).eval()


def write_snapshot(
    directory: Path, *, do_normalize: bool = True, legacy_bin: bool = False, config_fields: dict | None = None,
    small: bool = False,
) -> HubertModel:
    """A MERT-style snapshot: MERT's config.json keys, the feature extractor's preprocessor_config.json and
    weights. ``legacy_bin`` writes ``pytorch_model.bin`` with the ``weight_g``/``weight_v`` weight-norm names
    of 2023 files; ``small`` the :data:`SMALL` architecture.
    """
    model = tiny_model(**(SMALL if small else {}))
    model.save_pretrained(directory)
    if legacy_bin:
        (directory / "model.safetensors").unlink()
        renamed = {
            key.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            ): value
            for key, value in model.state_dict().items()
        }
        torch.save(renamed, directory / "pytorch_model.bin")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | MERT_ONLY_FIELDS | (config_fields or {})))
    Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=do_normalize).save_pretrained(directory)
    return model


def music(seconds: float, clips: int = 1, seed: int = 0) -> np.ndarray:
    """``[clips, N]`` float32: a few harmonics and noise, different per clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    rows = [
        sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) * 0.2 + 0.01 * rng.standard_normal(t.size)
        for f0 in rng.uniform(110, 440, clips)
    ]
    return np.stack(rows).astype(np.float32)


def write_music2latent_checkpoint(directory: Path, seed: int = 0) -> Path:
    """``music2latent.pt`` as the package reads it: ``{'gen_state_dict': UNet().state_dict()}``, built from the
    package's current globals (see :data:`REDUCED_UNET`), every weight random (the package zero-initialises
    some convolutions, which would hide their inputs)."""
    import music2latent.models

    torch.manual_seed(seed)
    unet = music2latent.models.UNet()
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "music2latent.pt"
    torch.save({"gen_state_dict": unet.state_dict()}, path)
    return path


def piece_batch(audio: np.ndarray, pieces: Sequence[Piece]) -> torch.Tensor:
    """``[B, channels, size]`` float32: each piece's segments of ``audio`` (``[channels, N]`` or ``[N]``) end to
    end, zeros after them, as :class:`embedders.windows.Piece` defines a model input."""
    audio = np.atleast_2d(audio)
    batch = np.zeros((len(pieces), audio.shape[0], pieces[0].size), dtype=np.float32)
    for row, piece in enumerate(pieces):
        joined = np.concatenate([audio[:, start : start + length] for start, length in piece.segments], axis=-1)
        batch[row, :, : joined.shape[-1]] = joined
    return torch.from_numpy(batch)
