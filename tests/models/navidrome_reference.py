"""An independent reference implementation of ``/work/shared/navidrome.md`` (Navidrome's stored audio vectors),
written from that page alone, for parity tests against musictext's production embedders.

Every step names the rule of navidrome.md it follows ("Shared rules", "MuQ-MuLan", "MERT", "Music2Latent").
It reads nothing of musictext's ``embedders``/``flows`` packages and copies no Navidrome code.

Decisions where the page is silent (each repeated where it applies):

* ``window_starts`` returns no start at all for ``N = 0``: the extra window the rule adds would be empty, and
  "an empty window is skipped".
* Enrichment is computed in float32 (the page: "float32") and its single L2 normalisation divides by
  ``max(norm, 1e-12)`` (``torch.nn.functional.normalize``), so an all-zero input stays zero instead of NaN.
* MERT windows go through the model one at a time, ``input_values`` only (no attention mask: every window is
  exactly ``W`` long after padding).
* MuQ windows go through ``model(wavs=...)`` as one batch; MuLan handles each batch item on its own.
* The 16-bit WAV for Music2Latent is written by soundfile (``subtype="PCM_16"``), which clips samples outside
  [-1, 1].
* The stereo (library-job) Music2Latent variant passes ``max_waveform_length=441000`` like the plan's mono path
  (the page does not say which value the library job uses), and rejects any channel count other than two.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

MUQ_RATE = 24_000
MUQ_WINDOW = 120 * MUQ_RATE  # 2,880,000 samples
MUQ_HOP = 15 * MUQ_RATE
MERT_RATE = 24_000
MERT_WINDOW = 30 * MERT_RATE  # 720,000 samples
MERT_HOP = 5 * MERT_RATE
MUSIC2LATENT_RATE = 44_100
MUSIC2LATENT_MAX_WAVEFORM_LENGTH = 441_000
ROBUST_SPREAD = 1.3489795003921634
MAGNITUDE_EPS = 1e-12

MUQ_MULAN_DIR, MUQ_BACKBONE_DIR, MUQ_TEXT_DIR = "MuQ-MuLan-large", "MuQ-large-msd-iter", "xlm-roberta-base"
"""The ``--weights`` layout of MuQ-MuLan's three repositories (``tests/models/tiny_muq.py`` writes it)."""

Waveform = np.ndarray | torch.Tensor


# ---------------------------------------------------------------------------------------------- shared rules


def mono(waveform: Waveform) -> torch.Tensor:
    """Shared rules, "Input": ``[channels, samples]`` or ``[samples]`` → 1-D float32, channels averaged by a plain
    mean of all channels."""
    x = torch.as_tensor(waveform).to(torch.float32)
    if x.dim() == 2:
        x = x.mean(dim=0)
    if x.dim() != 1:
        raise ValueError(f"expected [channels, samples] or [samples], got shape {tuple(x.shape)}")
    return x


def resample(x: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Shared rules, "Input": ``torchaudio.functional.resample`` at its defaults (windowed sinc, Hann, 6 zero
    crossings, rolloff 0.99); the identity when the rates are equal."""
    if from_rate == to_rate:
        return x
    return torchaudio.functional.resample(x, from_rate, to_rate)


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Shared rules, "Windows": starts ``0, H, 2H, …`` while ``start + W ≤ N``; if there is none, or the last window
    ends before ``N``, one more at ``max(N − W, 0)``. Empty windows are skipped, so ``N = 0`` gives ``[]`` (the page
    does not name this case; it follows from "an empty window is skipped")."""
    starts = list(range(0, n - window + 1, hop)) if n >= window else []
    if not starts or starts[-1] + window < n:
        starts.append(max(n - window, 0))
    return [start for start in starts if start < n]


def windows(x: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """Shared rules, "Windows": ``[T, W]``, the windows of ``window_starts`` in order, a short one (only when
    ``N < W``) zero-padded at its end to ``W``."""
    rows = []
    for start in window_starts(x.shape[-1], window, hop):
        piece = x[start:start + window]
        rows.append(torch.nn.functional.pad(piece, (0, window - piece.shape[-1])))
    if not rows:
        raise ValueError("no audio: every window is empty")
    return torch.stack(rows)


def enrich(frames: torch.Tensor) -> torch.Tensor:
    """Shared rules, "Enrichment": ``[D, T]`` → ``[3·D]`` float32: per dimension the mean over time, the robust
    spread ``(q75 − q25) / 1.3489795003921634`` (linear quantiles), the mean of first differences (zero when
    ``T = 1``), concatenated in that order, then one L2 normalisation of the whole vector."""
    x = frames.to(torch.float32)
    if x.dim() != 2 or x.shape[1] == 0:
        raise ValueError(f"expected frames [D, T] with T ≥ 1, got shape {tuple(x.shape)}")
    mean = x.mean(dim=1)
    q25, q75 = torch.quantile(x, torch.tensor([0.25, 0.75]), dim=1, interpolation="linear")
    spread = (q75 - q25) / ROBUST_SPREAD
    drift = torch.diff(x, dim=1).mean(dim=1) if x.shape[1] > 1 else torch.zeros_like(mean)
    return torch.nn.functional.normalize(torch.cat([mean, spread, drift]), dim=0)


# ------------------------------------------------------------------------------------------------ MuQ-MuLan


@torch.inference_mode()
def muq_reference(model: torch.nn.Module, waveform: Waveform, sample_rate: int) -> tuple[torch.Tensor, int]:
    """navidrome.md "MuQ-MuLan → 1536": mono, 24 kHz, 120 s windows with a 15 s hop (a short input is one window
    zero-padded to 120 s), the batch of windows through ``model(wavs=windows)`` — MuLan's own cutting into 10 s clips
    and plain mean of their unit latents, silent padding clips included — frames ``[512, T]`` → enrichment. ``model``
    is a ``muq.MuQMuLan`` in float32 (``load_muq`` gives one on CPU). Returns ``(vector [1536], T)``."""
    x = resample(mono(waveform), sample_rate, MUQ_RATE)
    batch = windows(x, MUQ_WINDOW, MUQ_HOP)
    device = next(model.parameters()).device
    latents = model(wavs=batch.to(device))  # [T, 512]
    frames = latents.to(torch.float32).cpu().T
    return enrich(frames), frames.shape[1]


# ---------------------------------------------------------------------------------------------------- MERT


@torch.inference_mode()
def mert_reference(model: torch.nn.Module, feature_extractor, waveform: Waveform,
                   sample_rate: int) -> tuple[torch.Tensor, int]:
    """navidrome.md "MERT-v1-330M → 76,800": mono, 24 kHz, 30 s windows with a 5 s hop, each window zero-padded to 30 s
    **before** the ``Wav2Vec2FeatureExtractor`` (so ``do_normalize``, as configured, is per padded window), then the
    model with ``output_hidden_states=True``; every hidden state as the model returns it (on transformers 4.57 the
    last is ``last_hidden_state``) averaged over time and concatenated layer 0 first → one frame per window;
    frames ``[states·hidden, T]`` → enrichment. Returns ``(vector, T)``."""
    x = resample(mono(waveform), sample_rate, MERT_RATE)
    device = next(model.parameters()).device
    frames = []
    for window in windows(x, MERT_WINDOW, MERT_HOP):
        inputs = feature_extractor(window.numpy(), sampling_rate=MERT_RATE, return_tensors="pt")
        output = model(inputs["input_values"].to(device=device, dtype=torch.float32), output_hidden_states=True)
        frames.append(torch.cat([state[0].mean(dim=0) for state in output.hidden_states]))
    stacked = torch.stack(frames, dim=1).to(torch.float32).cpu()
    return enrich(stacked), stacked.shape[1]


# ------------------------------------------------------------------------------------------------ Music2Latent


def interleaved_rows(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """navidrome.md "Music2Latent": a ``[K, T]`` pair → ``[3K, T]``: rows ``[a0, b0, a1, b1, …]`` then
    ``sqrt(a_i² + b_i² + 1e-12)``. The mono path passes ``second = 0`` (``[m0, 0, m1, 0, …]`` and
    ``sqrt(m² + 1e-12)``); the library job's stereo variant passes left and right."""
    pairs = torch.stack([first, second], dim=1).reshape(2 * first.shape[0], first.shape[1])
    magnitudes = torch.sqrt(first**2 + second**2 + MAGNITUDE_EPS)
    return torch.cat([pairs, magnitudes])


@torch.inference_mode()
def music2latent_reference(codec, waveform: Waveform, sample_rate: int,
                           tmp_dir: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """navidrome.md "Music2Latent → 576", the plan's (default, mono) path: mono, 44.1 kHz by torchaudio, written to a
    temporary 16-bit PCM WAV (soundfile, which clips outside [-1, 1]),
    ``codec.encode(path, max_waveform_length=441000)`` → ``[1, 64, T]``; rows interleave the latents with zeros, then
    64 magnitudes; frames ``[192, T]`` → enrichment. ``codec`` is a ``music2latent.EncoderDecoder``.
    Returns ``(vector [576], T)``."""
    x = resample(mono(waveform), sample_rate, MUSIC2LATENT_RATE)
    handle, name = tempfile.mkstemp(suffix=".wav", dir=tmp_dir)
    os.close(handle)
    try:
        soundfile.write(name, x.numpy(), MUSIC2LATENT_RATE, subtype="PCM_16")
        latents = codec.encode(name, max_waveform_length=MUSIC2LATENT_MAX_WAVEFORM_LENGTH)
    finally:
        os.unlink(name)
    m = torch.as_tensor(latents).to(torch.float32).cpu()[0]
    frames = interleaved_rows(m, torch.zeros_like(m))
    return enrich(frames), frames.shape[1]


@torch.inference_mode()
def music2latent_stereo_reference(codec, path: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """navidrome.md "Music2Latent", the library job's named variant: the original file encoded at its own channels
    and sample rate (no mono, no resampling) → ``[2, 64, T]``; rows ``[L0, R0, L1, R1, …]`` then
    ``sqrt(L² + R² + 1e-12)``; frames ``[192, T]`` → enrichment. The page does not give the library job's
    ``max_waveform_length``; this passes 441000, the plan's value. A file that is not two-channel raises
    ``ValueError`` (a mono file fails in Navidrome)."""
    latents = torch.as_tensor(codec.encode(str(path), max_waveform_length=MUSIC2LATENT_MAX_WAVEFORM_LENGTH))
    if latents.shape[0] != 2:
        raise ValueError(f"the stereo variant needs a two-channel file, {path} has {latents.shape[0]}")
    left, right = latents.to(torch.float32).cpu()
    frames = interleaved_rows(left, right)
    return enrich(frames), frames.shape[1]


# -------------------------------------------------------------------------------- builders for parity tests


def load_muq(weights_root: str | os.PathLike[str]):
    """A ``muq.MuQMuLan`` (float32, CPU, eval) from the ``--weights`` layout: ``root/MuQ-MuLan-large/{config.json,
    pytorch_model.bin}``, ``root/MuQ-large-msd-iter``, ``root/xlm-roberta-base``. The config names its sub-models by
    repository id; they are pointed at the local folders, and the MuLan checkpoint is loaded strictly."""
    from muq import MuQMuLan

    root = Path(weights_root)
    config = json.loads((root / MUQ_MULAN_DIR / "config.json").read_text())
    config["audio_model"]["name"] = str(root / MUQ_BACKBONE_DIR)
    config["text_model"]["name"] = str(root / MUQ_TEXT_DIR)
    model = MuQMuLan(config)
    state = torch.load(root / MUQ_MULAN_DIR / "pytorch_model.bin", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.to(torch.float32).eval()


def load_mert(snapshot_dir: str | os.PathLike[str]):
    """``(transformers.HubertModel, transformers.Wav2Vec2FeatureExtractor)`` from a MERT snapshot directory (float32,
    eval); every weight of the model must come from the snapshot (no missing or unexpected keys)."""
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    model, info = HubertModel.from_pretrained(str(snapshot_dir), torch_dtype=torch.float32, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise ValueError(f"MERT snapshot does not match HubertModel: {info}")
    return model.eval(), Wav2Vec2FeatureExtractor.from_pretrained(str(snapshot_dir))


@contextlib.contextmanager
def unet_globals(values: Mapping[str, object]) -> Iterator[None]:
    """Music2Latent builds ``UNet`` from module globals of ``music2latent.models``; this sets ``values`` there for the
    duration of the block and restores them after."""
    import music2latent.models

    saved = {name: getattr(music2latent.models, name) for name in values}
    try:
        for name, value in values.items():
            setattr(music2latent.models, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(music2latent.models, name, value)


def load_music2latent(checkpoint_path: str | os.PathLike[str], globals_: Mapping[str, object] | None = None):
    """A ``music2latent.EncoderDecoder`` on CPU from a local ``music2latent.pt``, its ``download_model`` bypassed.
    ``globals_`` (e.g. a reduced ``base_channels``…) are in effect while it builds its ``UNet``, which reads them only
    then; they must match the ones the checkpoint was written with. The checkpoint is then loaded again strictly."""
    import music2latent.inference

    download = music2latent.inference.download_model
    music2latent.inference.download_model = lambda: None
    try:
        with unet_globals(globals_ or {}):
            codec = music2latent.inference.EncoderDecoder(load_path_inference=str(checkpoint_path), device="cpu")
    finally:
        music2latent.inference.download_model = download
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    codec.gen.load_state_dict(checkpoint["gen_state_dict"], strict=True)  # the package itself loads with strict=False
    return codec
