"""``mert``: MERT-v1-330M, one 25 600-d frame per 30 s window every 5 s (→ 76 800), as Navidrome computes it.

shared/navidrome.md: the reference takes the track mono at 24 kHz and cuts 30 s windows every 5 s (one
window zero-padded to 30 s for anything shorter, one more window ending at the track's end). Each padded
window is normalised by the model's ``Wav2Vec2FeatureExtractor`` on its own (``do_normalize``: zero mean,
unit variance over the padded window, variance floor 1e-7) and run with ``output_hidden_states=True``; each
of the 25 hidden states (the feature projection and the 24 layers) is averaged over the window's time
steps, and the 25 means, layer 0 first, are the window's frame. Frames ``[25600, T]`` are then enriched.
The padding is part of the window as the model sees it (its attention attends to it), so a 10 s clip costs
a whole 30 s window.

The MERT snapshot ships remote code (``MERTModel``), but for v1-330M that model *is* transformers' own
``HubertModel``: no CQT branch, and with ``do_stable_layer_norm`` the encoder is HuBERT's; its weights
load into ``HubertModel`` with no missing or unexpected keys and give identical hidden states
(shared/embedders.md §2). So no remote code runs here. A config that switches on what HuBERT lacks is
refused rather than silently computed differently, and so is a checkpoint that leaves any weight unloaded.
transformers 5 changed ``hidden_states[-1]`` of this encoder to the state *before* the final LayerNorm
(4.57, the reference's: after it, equal to ``last_hidden_state``), so the 25th state is always taken from
``last_hidden_state``, which means the same in both.

Precision: ``reference`` runs float32, as the reference does; ``bf16`` runs under bfloat16 autocast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedders.audio_input import AudioInput
from embedders.spec import NAVIDROME_SPACE, EmbedderSpec
from embedders.weights import WeightsSpec, locate_weights
from embedders.windows import Piece, TrackPlan, window_starts

if TYPE_CHECKING:
    import torch
    from transformers import HubertConfig, HubertModel

SAMPLE_RATE = 24_000
WINDOW_S = 30.0
HOP_S = 5.0
NORM_EPS = 1e-7
"""``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``'s variance floor."""

WEIGHTS = WeightsSpec(
    name="mert",
    title="MERT-v1-330M",
    repo_id="m-a-p/MERT-v1-330M",
    # Taken from a public loader that pins this repository; not re-checked against the Hub from here.
    revision="0e06c986db0527c0fd1b47181c40f006805e3de0",
    files=("config.json", "preprocessor_config.json"),
    weight_files=("model.safetensors", "pytorch_model.bin"),
    download_size="about 1.3 GB",
)
AUDIO_INPUT = AudioInput(SAMPLE_RATE)


class MertEmbedder:
    """:class:`embedders.torch_runtime.TrackEmbedder` for MERT-v1-330M (see the module docstring)."""

    audio_input = AUDIO_INPUT
    piece_s = WINDOW_S

    def __init__(
        self, weights: Path | None = None, *, device: str | torch.device = "cpu", precision: str = "reference"
    ) -> None:
        import torch
        from transformers import Wav2Vec2FeatureExtractor

        located = locate_weights(WEIGHTS, weights)
        self.spec = SPEC
        self.revision = located.revision
        self.weights_sha256 = located.sha256
        self.precision = precision
        config = _hubert_config(located.directory / "config.json")
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(located.directory)
        if int(extractor.sampling_rate) != SAMPLE_RATE:
            raise ValueError(f"{located.directory} configures MERT for {extractor.sampling_rate} Hz; Navidrome's "
                             f"runs at {SAMPLE_RATE} Hz")
        self.normalize = bool(extractor.do_normalize)
        self.window, self.hop = round(WINDOW_S * SAMPLE_RATE), round(HOP_S * SAMPLE_RATE)
        self.frame_dim = (config.num_hidden_layers + 1) * config.hidden_size
        self.device = torch.device(device)
        self.model = _load_model(located.directory, config).to(self.device).eval()

    def plan(self, samples: int) -> TrackPlan:
        """One piece per window, zero-padded to 30 s."""
        starts = window_starts(samples, self.window, self.hop)
        pieces = tuple(Piece.span(start, min(self.window, samples - start), self.window) for start in starts)
        return TrackPlan(pieces, len(pieces))

    def forward(self, pieces: torch.Tensor, key: tuple[Any, ...]) -> torch.Tensor:
        """``pieces``: ``[B, 1, 720000]`` padded windows; returns ``[B, 25600]``: per window, the time-mean of
        every hidden state, layer 0 first."""
        import torch

        audio = pieces[:, 0].float()
        if self.normalize:
            audio = _zero_mean_unit_variance(audio)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            output = self.model(audio, output_hidden_states=True)
        states = (*output.hidden_states[:-1], output.last_hidden_state)
        return torch.cat([state.float().mean(dim=1) for state in states], dim=-1)

    def assemble(self, plan: TrackPlan, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[25600, T]``: the windows' frames in time order."""
        import torch

        return torch.stack(list(outputs), dim=1)


def _hubert_config(path: Path) -> HubertConfig:
    """The snapshot's config as a ``HubertConfig``, refused where ``MERTModel`` would compute differently."""
    from transformers import HubertConfig

    fields = json.loads(path.read_text())
    if fields.get("feature_extractor_cqt"):
        raise ValueError(f"{path} enables MERT's CQT features, which HubertModel lacks; mert cannot run it.")
    if fields.get("deepnorm") and not fields.get("do_stable_layer_norm"):
        raise ValueError(f"{path} uses MERT's DeepNorm encoder, which HubertModel lacks; mert cannot run it.")
    return HubertConfig.from_dict(fields)


def _load_model(directory: Path, config: HubertConfig) -> HubertModel:
    from transformers import HubertModel

    model, info = HubertModel.from_pretrained(directory, config=config, output_loading_info=True)
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    problems = {kind: info[kind] for kind in kinds if info[kind]}
    if problems:
        raise ValueError(
            f"the weights in {directory} do not match HubertModel exactly ({problems}); they are not "
            "MERT-v1-330M weights, or this transformers version reads them differently."
        )
    return model


def _zero_mean_unit_variance(audio: torch.Tensor) -> torch.Tensor:
    """Per window, as ``Wav2Vec2FeatureExtractor`` normalises; statistics in float64."""
    import torch

    wide = audio.double()
    mean = wide.mean(dim=-1, keepdim=True)
    variance = wide.var(dim=-1, unbiased=False, keepdim=True)
    return ((wide - mean) / torch.sqrt(variance + NORM_EPS)).float()


SPEC = EmbedderSpec(
    name="mert",
    summary="MERT-v1-330M: 30 s windows every 5 s, time-mean of all 25 hidden states (Navidrome's 'mert')",
    factory=lambda weights, device, precision: MertEmbedder(weights, device=device, precision=precision),
    space=NAVIDROME_SPACE,
    frame_dim=25 * 1024,
    sample_rate=SAMPLE_RATE,
    window_s=WINDOW_S,
    hop_s=HOP_S,
    audio_input=AUDIO_INPUT.describe(),
    window_padding="zeros",
    weights=WEIGHTS,
    device=True,
    # 2.94 GiB for 32 × 10 s in bf16 (shared/embedders.md §2, which kept every frame); float32 doubles it.
    audio_bytes_per_second=40_000_000,
)
