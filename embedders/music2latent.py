"""``music2latent``: Music2Latent latents, 192 rows per 10.77 Hz frame (→ 576), as Navidrome computes them.

shared/navidrome.md: the reference takes the track mono at 44.1 kHz, writes it to a 16-bit PCM WAV file and
calls the package's ``EncoderDecoder.encode(path, max_waveform_length=441000)``. ``encode`` crops the
waveform to ``((N − 1536) // 4096) · 4096 + 1536`` samples, turns it into its STFT representation (2048-sample
windows every 512, no padding: ``8·m`` columns for ``m`` latent frames), and, when that is longer than 856
columns (10 s), cuts it into chunks of 856 columns, the last one filled with the *first* columns of the
track, encodes every chunk on its own and joins the latents, dropping those of the filling. The mono latent
``m`` (64 channels) becomes the "real" part of a pair whose other part is zero: rows ``[m0, 0, m1, 0, …,
m63, 0]``, then the 64 magnitudes ``sqrt(m² + 1e-12)``. A third of the vector is therefore always zero.

Here the same chunks are pieces: a chunk is the audio its 856 columns are computed from (438 272 samples
plus the 1 536 its last window reaches past them), and the filled last chunk is two stretches — its own
tail and the track's head — whose representations are computed apart and joined column-wise, as the
package joins them. The representation of a column depends only on its own 2048 samples, so these are the
package's columns exactly, and every chunk goes through the encoder as the package runs it: alone in its
batch row, under the package's own autocast (``mixed_precision``: float16 on CUDA, float32 on a CPU).

The ``stereo`` layout (:mod:`embedders.music2latent_stereo`) is what Navidrome's library job stores instead:
it encodes the file at its own channels (and rate), each channel on its own, and interleaves them, rows
``[L0, R0, L1, R1, …]`` then ``sqrt(L² + R² + 1e-12)``; a mono file fails there, and fails here too.

The package's ``EncoderDecoder`` is not used for loading: its constructor downloads the checkpoint into the
installed package (even when given a local path). The package's real ``UNet`` is built from its
hyper-parameters and the checkpoint's ``gen_state_dict`` loaded into its encoder, strictly. The checkpoint is
a pickle (the package loads it with ``weights_only=False``), so its sha256 is recorded, and checked before
unpickling whenever a value is pinned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedders.audio_input import AudioInput
from embedders.spec import NAVIDROME_SPACE, EmbedderSpec
from embedders.weights import LocatedWeights, WeightsSpec, locate_weights
from embedders.windows import Piece, TrackPlan

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 44_100
LATENT_CHANNELS = 64
MAX_WAVEFORM_LENGTH = 441_000
"""``max_waveform_length`` of the reference's ``encode`` call: 10 s chunks."""
STFT_HOP = 512
STFT_WINDOW = 4 * STFT_HOP
DOWNSAMPLING = 8
"""STFT columns per latent frame (``2 ** freq_downsample_list.count(0)``)."""
MAGNITUDE_FLOOR = 1e-12
LAYOUTS = ("mono", "stereo")

WEIGHTS = WeightsSpec(
    name="music2latent",
    title="Music2Latent",
    repo_id="SonyCSLParis/music2latent",
    # Unverified: neither the Hub commit nor the file's sha256 could be read from here (no network). The
    # cache's refs/main names the snapshot, whose commit is what gets recorded; pin both once fetched.
    revision="main",
    files=(),
    weight_files=("music2latent.pt",),
    download_size="about 233 MB",
)
AUDIO_INPUTS = {
    "mono": AudioInput(SAMPLE_RATE, quantise_16bit=True),
    "stereo": AudioInput(SAMPLE_RATE, mono=False, resample=False),
}


class Music2LatentEmbedder:
    """:class:`embedders.torch_runtime.TrackEmbedder` for Music2Latent (see the module docstring)."""

    frame_dim = 3 * LATENT_CHANNELS
    piece_s = MAX_WAVEFORM_LENGTH / SAMPLE_RATE

    def __init__(
        self,
        weights: Path | None = None,
        *,
        device: str | torch.device = "cpu",
        precision: str = "reference",
        layout: str = "mono",
        spec: EmbedderSpec | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        import music2latent.audio
        import music2latent.hparams
        import music2latent.hparams_inference
        import torch

        located = locate_weights(WEIGHTS, weights)
        _check_sha256(located)
        _check_geometry(music2latent.hparams)
        self.spec = spec or _spec_of(layout)
        self.layout = layout
        self.audio_input = AUDIO_INPUTS[layout]
        self.revision = located.revision
        self.weights_sha256 = located.sha256
        self.precision = precision
        self.device = torch.device(device)
        self.representation = music2latent.audio.to_representation_encoder
        self.sigma_rescale = float(music2latent.hparams_inference.sigma_rescale)
        self.package_fp16 = bool(music2latent.hparams.mixed_precision)
        self.chunk_columns = (int(MAX_WAVEFORM_LENGTH / STFT_HOP) // DOWNSAMPLING) * DOWNSAMPLING
        self.encoder = _load_encoder(located).to(self.device).eval()

    def plan(self, samples: int) -> TrackPlan:
        """The package's chunks (see the module docstring); ``T = (N − 1536) // 4096`` latent frames."""
        frames = max(0, (samples - (STFT_WINDOW - STFT_HOP)) // (STFT_HOP * DOWNSAMPLING))
        columns = frames * DOWNSAMPLING
        if columns <= self.chunk_columns:
            pieces = (Piece.span(0, _samples_for(columns), _samples_for(columns)),) if frames else ()
            return TrackPlan(pieces, frames)
        chunks = math.ceil(columns / self.chunk_columns)
        full = _samples_for(self.chunk_columns)
        pieces = [Piece.span(index * self.chunk_columns * STFT_HOP, full, full) for index in range(chunks - 1)]
        last_start = (chunks - 1) * self.chunk_columns
        tail = (last_start * STFT_HOP, _samples_for(columns - last_start))
        filling = self.chunk_columns - (columns - last_start)
        segments = (tail, (0, _samples_for(filling))) if filling else (tail,)
        pieces.append(Piece(segments, sum(length for _, length in segments)))
        return TrackPlan(tuple(pieces), frames)

    def forward(self, pieces: torch.Tensor, key: tuple[Any, ...]) -> torch.Tensor:
        """``pieces``: ``[B, C, size]`` chunks laid out as ``key`` says; returns ``[B, C, 64, t]`` latents."""
        import torch

        batch, channels, size = pieces.shape
        items = pieces.reshape(batch * channels, size).float()
        lengths, offsets = key[1:] or (size,), [0]
        for length in lengths:
            offsets.append(offsets[-1] + length)
        representation = torch.cat(
            [self.representation(items[:, start:end]) for start, end in zip(offsets, offsets[1:], strict=False)],
            dim=-1,
        )
        with self._autocast():
            latents = self.encoder(representation)
        latents = latents.float() / self.sigma_rescale
        return latents.reshape(batch, channels, LATENT_CHANNELS, latents.shape[-1])

    def assemble(self, plan: TrackPlan, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[192, T]`` in the layout's rows, from the chunks' latents joined in time."""
        import torch

        latents = torch.cat(list(outputs), dim=-1)[..., : plan.frames]
        if self.layout == "mono":
            real = latents[0]
            paired = torch.stack([real, torch.zeros_like(real)], dim=1)
        else:
            paired = latents.transpose(0, 1)
        interleaved = paired.reshape(2 * LATENT_CHANNELS, plan.frames)
        magnitude = torch.sqrt(paired.square().sum(dim=1) + MAGNITUDE_FLOOR)
        return torch.cat([interleaved, magnitude], dim=0)

    def _autocast(self) -> torch.autocast:
        import torch

        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.package_fp16 and self.device.type == "cuda")


def _spec_of(layout: str) -> EmbedderSpec:
    """The registered spec of ``layout`` (the stereo one is declared by its own module)."""
    if layout == "mono":
        return SPEC
    from embedders.music2latent_stereo import SPEC as STEREO

    return STEREO


def _samples_for(columns: int) -> int:
    """Samples whose STFT (no padding) gives ``columns`` columns."""
    return (columns - 1) * STFT_HOP + STFT_WINDOW


def _check_geometry(hparams: Any) -> None:
    """This module's constants are the package's; a package that changed them computes other vectors."""
    found = (hparams.sample_rate, hparams.hop, 2 ** hparams.freq_downsample_list.count(0))
    if found != (SAMPLE_RATE, STFT_HOP, DOWNSAMPLING):
        raise ValueError(f"music2latent's hyper-parameters (rate, hop, downsampling) are {found}, not "
                         f"{(SAMPLE_RATE, STFT_HOP, DOWNSAMPLING)}: this package version computes other latents")


def _check_sha256(located: LocatedWeights) -> None:
    pinned = WEIGHTS.sha256
    if pinned and located.sha256 != pinned:
        raise ValueError(
            f"{located.weights_file} has sha256 {located.sha256}, but {WEIGHTS.weight_files[0]} of "
            f"{WEIGHTS.repo_id} has {pinned}. It is not the checkpoint this code was checked against, "
            f"and it would be unpickled, so it is not loaded: replace it with `{WEIGHTS.fetch_command}`."
        )


def _load_encoder(located: LocatedWeights) -> torch.nn.Module:
    """The package's ``UNet`` encoder with the checkpoint's weights; every encoder weight must be in it."""
    import torch
    from music2latent.models import UNet

    checkpoint = torch.load(located.weights_file, map_location="cpu", weights_only=False)
    state = checkpoint.get("gen_state_dict") if isinstance(checkpoint, dict) else None
    if state is None:
        raise ValueError(
            f"{located.weights_file} holds no 'gen_state_dict'; it is not a Music2Latent checkpoint. "
            f"Replace it with `{WEIGHTS.fetch_command}`."
        )
    encoder = UNet().encoder
    prefix = "encoder."
    encoder_state = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
    try:
        encoder.load_state_dict(encoder_state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"the encoder weights in {located.weights_file} do not match music2latent's UNet encoder "
            f"({error}); they are not Music2Latent weights for this package version."
        ) from error
    return encoder


def spec_for(layout: str, name: str, summary: str, audio_bytes_per_second: int, service_name: str = "") -> EmbedderSpec:
    """A Music2Latent spec in one of :data:`LAYOUTS` (the stereo variant's module declares its own with it)."""

    def factory(weights: Path | None, device: str, precision: str) -> Music2LatentEmbedder:
        return Music2LatentEmbedder(weights, device=device, precision=precision, layout=layout, spec=spec)

    spec = EmbedderSpec(
        name=name, summary=summary, factory=factory, space=NAVIDROME_SPACE,
        frame_dim=Music2LatentEmbedder.frame_dim, sample_rate=SAMPLE_RATE,
        window_s=MAX_WAVEFORM_LENGTH / SAMPLE_RATE, hop_s=MAX_WAVEFORM_LENGTH / SAMPLE_RATE,
        audio_input=AUDIO_INPUTS[layout].describe(), window_padding="repeat", weights=WEIGHTS, device=True,
        audio_bytes_per_second=audio_bytes_per_second, service_name=service_name,
    )
    return spec


# 2 600 bytes per channel sample under bf16 autocast, measured on an H100 (16.8 GiB for 16 channel-items of
# 10 s), twice over for float32 on a CPU or a float16 fallback.
SPEC = spec_for("mono", "music2latent", "Music2Latent: mono latents interleaved with zeros plus magnitudes, 10 s "
                "chunks (Navidrome's 'latent')", audio_bytes_per_second=230_000_000, service_name="latent")
