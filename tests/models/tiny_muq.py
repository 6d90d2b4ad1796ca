"""MuQ-MuLan's three repositories with tiny random weights, built from the real ``muq`` and transformers
classes and laid out as the real ones are, so the adapter loads them offline with production code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from muq import MuQ, MuQMuLan
from transformers import XLMRobertaConfig, XLMRobertaModel

from embedders.muq import BACKBONE_WEIGHTS as MUQ_BACKBONE
from embedders.muq import TEXT_WEIGHTS as MUQ_TEXT
from embedders.muq import WEIGHTS as MUQ

ENCODER_DIM = 32
BACKBONE = {
    "conv_dim": 4, "encoder_dim": ENCODER_DIM, "encoder_depth": 2, "codebook_size": 16, "codebook_dim": 4,
    "stat": {"melspec_2048_mean": 6.77, "melspec_2048_std": 19.0},
    "w2v2_config": {
        "position_embeddings_type": "rotary", "rotary_embedding_base": 10_000, "max_source_positions": 5_000,
        "num_attention_heads": 2, "intermediate_size": 37, "hidden_act": "swish", "layer_norm_eps": 1e-5,
        "conv_depthwise_kernel_size": 3, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
        "feat_extract_activation": "gelu", "hidden_dropout": 0.0, "attention_dropout": 0.0,
        "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "conformer_conv_dropout": 0.0, "layerdrop": 0.0,
    },
}
"""MuQ-large-msd-iter's architecture (mel front end, conv subsampling, rotary conformer), tiny width."""
TEXT = XLMRobertaConfig(
    vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
    max_position_embeddings=40,
)
HEAD = {"dim": 24, "tf_depth": 1, "heads": 2, "dim_head": 8}
MULAN = {
    "mulan": {"sr": 24_000, "clip_secs": 10, "dim_latent": 512},
    "audio_model": {"name": MUQ_BACKBONE.repo_id, "model_dim": ENCODER_DIM, "use_layer_idx": -1},
    "text_model": {"name": MUQ_TEXT.repo_id, "model_dim": TEXT.hidden_size},
    "audio_transformer": HEAD,
    "text_transformer": HEAD,
}
"""MuQ-MuLan-large's config.json: the sub-models named by repository id, as the published one names them."""


def write_repos(root: Path, seed: int = 0, *, backbone_config: dict | None = None, head: dict | None = None) -> Path:
    """``root/{MuQ-MuLan-large, MuQ-large-msd-iter, xlm-roberta-base}`` (the ``--weights`` layout); returns root.

    The checkpoint's weights differ from the backbone's and the text tower's, as after MuLan training, so a
    model that kept any of theirs would give different latents. ``backbone_config`` and ``head`` replace the
    tiny audio backbone and audio transformer (the throughput benchmark builds the published sizes with them).
    """
    torch.manual_seed(seed)
    backbone_config = backbone_config or BACKBONE
    backbone, text, mulan = (root / spec.folder for spec in (MUQ_BACKBONE, MUQ_TEXT, MUQ))
    MuQ(backbone_config).save_pretrained(backbone)
    XLMRobertaModel(TEXT).save_pretrained(text)
    config = MULAN | {"audio_model": MULAN["audio_model"] | {"model_dim": backbone_config["encoder_dim"]},
                      "audio_transformer": head or HEAD}
    local = config | {"audio_model": config["audio_model"] | {"name": str(backbone)},
                      "text_model": config["text_model"] | {"name": str(text)}}
    model = MuQMuLan(local)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    mulan.mkdir()
    (mulan / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), mulan / "pytorch_model.bin")
    return root
