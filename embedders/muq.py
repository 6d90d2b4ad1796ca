"""``muq``: MuQ-MuLan-large, one 512-d frame per 120 s window every 15 s (→ 1536), as Navidrome computes it.

shared/navidrome.md: the reference takes the track mono at 24 kHz, cuts 120 s windows every 15 s (one
window zero-padded to 120 s for anything shorter, one more window ending at the track's end), and calls
``MuQMuLan(wavs=windows)``: MuLan cuts each window into twelve disjoint 10 s clips, embeds each clip on its
own (a unit vector) and averages the twelve without renormalising. Frames ``[512, T]`` are then enriched.

Here the work is planned per clip instead of per window, with the same result: every 10 s clip of every
window is a piece run through ``get_audio_latents`` (MuLan's own per-clip call), and a window's frame is
the plain mean of its twelve clip latents. Clips that several windows share (the 15 s hop puts clip starts
on a 5 s grid) are computed once, and the digital silence of a padded window — eleven of the twelve clips
of a 10 s input — is one latent computed once per loaded model, not eleven forward passes per clip. A
clip's latent depends on that clip only, so none of this changes a vector.

Loading never downloads (see :mod:`embedders.weights`). ``MuQMuLan``'s constructor builds its audio
backbone with ``MuQ.from_pretrained(audio_model.name)`` and its text tower with
``XLMRobertaModel.from_pretrained(text_model.name)``, by default from the Hub; so all three repositories
are located on this machine and the two names in MuQ-MuLan-large's ``config.json`` are replaced by the
located directories (whose paths still contain "muq" and "xlm-roberta", which the constructor
dispatches on). The checkpoint then overwrites every weight of both, strictly: the hub mixin's default
``strict=False`` would leave a renamed or missing weight silently random. The text tower (329 M of the
709 M parameters) is then dropped: audio embeddings never use it.

Precision: the reference runs in float32, and so does ``reference`` here. ``bf16`` runs float32 waveforms
under bfloat16 autocast (casting the model to bf16 instead crashes: MuQ casts its mel spectrogram to fp16
whenever the input is 16-bit).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedders.audio_input import AudioInput
from embedders.spec import NAVIDROME_SPACE, EmbedderSpec
from embedders.weights import LocatedWeights, WeightsSpec, locate_weights
from embedders.windows import Piece, TrackPlan, window_starts

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 24_000
WINDOW_S = 120.0
HOP_S = 15.0
LATENT_DIM = 512

# MuQ-MuLan: unverified revisions (the cache's refs/main names the snapshot, whose commit is recorded). A public
# loader that pins all three uses MuQ-MuLan-large 2e01c796b71dca71b45251384c04cd7b237c9020, MuQ-large-msd-iter
# 0562a57814f6f8bbd9fdea0a25921a2fce1a841a and xlm-roberta-base e73636d4f797dec63c3081bb6ed5c7b0bb3f2089; pin
# them once checked against the Hub.
BACKBONE_WEIGHTS = WeightsSpec(
    name="muq",
    title="MuQ-large-msd-iter (MuQ-MuLan's audio backbone)",
    repo_id="OpenMuQ/MuQ-large-msd-iter",
    revision="main",
    files=("config.json",),
    weight_files=("model.safetensors",),
    download_size="about 1.3 GB",
)
TEXT_WEIGHTS = WeightsSpec(
    name="muq",
    title="XLM-RoBERTa base (MuQ-MuLan's text tower)",
    repo_id="FacebookAI/xlm-roberta-base",
    revision="main",
    files=("config.json",),
    # The repository also holds pytorch_model.bin (and TF, Flax, ONNX copies): the same weights, which
    # fetching by pattern would download a second time.
    weight_files=("model.safetensors",),
    download_size="about 1.1 GB",
)
WEIGHTS = WeightsSpec(
    name="muq",
    title="MuQ-MuLan-large",
    repo_id="OpenMuQ/MuQ-MuLan-large",
    revision="main",
    files=("config.json",),
    weight_files=("model.safetensors", "pytorch_model.bin"),
    download_size="about 5.2 GB in 3 repositories",
    requires=(BACKBONE_WEIGHTS, TEXT_WEIGHTS),
)
AUDIO_INPUT = AudioInput(SAMPLE_RATE)


class MuqEmbedder:
    """:class:`embedders.torch_runtime.TrackEmbedder` for MuQ-MuLan-large (see the module docstring)."""

    audio_input = AUDIO_INPUT

    def __init__(
        self, weights: Path | None = None, *, device: str | torch.device = "cpu", precision: str = "reference"
    ) -> None:
        import muq  # noqa: F401 -- a missing package is said before missing weights
        import torch

        located = locate_weights(WEIGHTS, weights)
        self.spec = SPEC
        self.revision = located.revision
        self.weights_sha256 = located.sha256
        self.precision = precision
        model = _load_model(located)
        if int(model.sr) != SAMPLE_RATE:
            raise ValueError(f"{located.directory} configures MuQ-MuLan for {model.sr} Hz; Navidrome's runs at "
                             f"{SAMPLE_RATE} Hz")
        self.clip = round(model.sr * model.clip_secs)
        self.window, self.hop = round(WINDOW_S * SAMPLE_RATE), round(HOP_S * SAMPLE_RATE)
        if self.window % self.clip:
            raise ValueError(f"MuLan clips of {model.clip_secs} s do not tile the {WINDOW_S:g} s window")
        self.piece_s = float(model.clip_secs)
        self.device = torch.device(device)
        self.mulan = _audio_only(model).to(self.device).eval()
        self.frame_dim = int(self.mulan.dim_latent)
        self._silence: torch.Tensor | None = None

    def plan(self, samples: int) -> TrackPlan:
        """One piece per distinct non-silent 10 s clip of the windows; ``layout``: per window, its twelve
        clips as piece indices, ``-1`` for a clip of padding (see the module docstring)."""
        pieces: dict[tuple[int, int], int] = {}
        layout = []
        for start in window_starts(samples, self.window, self.hop):
            clips = []
            for clip_start in range(start, start + self.window, self.clip):
                length = min(self.clip, max(0, samples - clip_start))
                clips.append(pieces.setdefault((clip_start, length), len(pieces)) if length else -1)
            layout.append(tuple(clips))
        spans = tuple(Piece.span(start, length, self.clip) for start, length in pieces)
        return TrackPlan(spans, len(layout), tuple(layout))

    def forward(self, pieces: torch.Tensor, key: tuple[Any, ...]) -> torch.Tensor:
        """``pieces``: ``[B, 1, 240000]`` 10 s clips; returns their ``[B, 512]`` unit latents (float32)."""
        import torch

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.mulan.get_audio_latents(pieces[:, 0]).float()

    def assemble(self, plan: TrackPlan, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[512, T]``: per window, the mean of its twelve clip latents. The silence latent goes last, so a
        padding clip's index ``-1`` picks it."""
        import torch

        latents = torch.stack([*outputs, self.silence()])
        return torch.stack([latents[list(clips)].mean(dim=0) for clips in plan.layout], dim=1)

    def silence(self) -> torch.Tensor:
        """The latent of a 10 s clip of digital silence, computed once."""
        import torch

        if self._silence is None:
            with torch.inference_mode():
                self._silence = self.forward(torch.zeros((1, 1, self.clip), device=self.device), ())[0]
        return self._silence


def _load_model(located: LocatedWeights) -> Any:
    """``MuQMuLan`` built from the located repositories, with every weight from the checkpoint."""
    import muq

    model = muq.MuQMuLan(_config(located))
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
    backbone = located.requires[BACKBONE_WEIGHTS.repo_id].directory
    text = located.requires[TEXT_WEIGHTS.repo_id].directory
    return config | {
        "audio_model": config["audio_model"] | {"name": str(backbone)},
        "text_model": config["text_model"] | {"name": str(text)},
    }


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch
    from safetensors.torch import load_file

    if path.suffix == ".safetensors":
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _audio_only(model: Any) -> torch.nn.Module:
    """The ``MuLanModel`` inside, without its text tower (see the module docstring)."""
    mulan = model.mulan_module
    mulan.text = None
    mulan.text_to_latents = None
    return mulan


SPEC = EmbedderSpec(
    name="muq",
    summary="MuQ-MuLan-large: 120 s windows every 15 s, MuLan's 10 s clip average (Navidrome's 'muq')",
    factory=lambda weights, device, precision: MuqEmbedder(weights, device=device, precision=precision),
    space=NAVIDROME_SPACE,
    frame_dim=LATENT_DIM,
    sample_rate=SAMPLE_RATE,
    window_s=WINDOW_S,
    hop_s=HOP_S,
    audio_input=AUDIO_INPUT.describe(),
    window_padding="zeros",
    weights=WEIGHTS,
    device=True,
    # 2.97 GiB of activations for 32 clips of 10 s in bf16 (shared/embedders.md §1), twice over for float32.
    audio_bytes_per_second=20_000_000,
)
