"""Self-tests of ``navidrome_reference`` (the independent reading of navidrome.md used by the parity tests).
Expected values are worked out by hand from the page's rules, not taken from the reference's code.

Runs in the models environment only (``.venv-models``); skipped elsewhere.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="model tests run in .venv-models (the models extra)")
pytest.importorskip("muq")
pytest.importorskip("music2latent")

import music2latent.models  # noqa: E402
import navidrome_reference as ref  # noqa: E402
import soundfile  # noqa: E402

REDUCED_UNET = {"base_channels": 4, "bottleneck_base_channels": 32, "num_bottleneck_layers": 1, "cond_channels": 16}


def tone(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``[channels, N]`` float32: harmonics and a little noise, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    rows = [sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) * 0.2 + 0.01 * rng.standard_normal(t.size)
            for f0 in rng.uniform(110, 880, channels)]
    return np.stack(rows).astype(np.float32)


def assert_unit(vector: torch.Tensor, size: int) -> None:
    assert vector.dtype == torch.float32 and vector.shape == (size,)
    assert float(vector.norm()) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- shared rules


@pytest.mark.parametrize(("n", "expected"), [
    (7, [0]),                      # N < W: one window at 0 (zero-padded)
    (10, [0]),                     # N = W
    (11, [0, 1]),                  # N = W + 1: 0, then one more at N − W = 1
    (23, [0, 3, 6, 9, 12, 13]),    # N = 2.3 W: 12 + 10 = 22 ≤ 23 < 25; the end is covered from 13
    (0, []),                       # the only window would be empty
])
def test_window_starts_small(n: int, expected: list[int]) -> None:
    assert ref.window_starts(n, 10, 3) == expected


def test_window_starts_at_mert_sizes() -> None:
    w, h = 720_000, 120_000
    assert ref.window_starts(w - 1, w, h) == [0]
    assert ref.window_starts(w, w, h) == [0]
    assert ref.window_starts(w + 1, w, h) == [0, 1]
    # 2.3 W = 1,656,000: k·H + W ≤ N for k = 0..7 (840,000 + 720,000 = 1,560,000), then one more at N − W.
    assert ref.window_starts(1_656_000, w, h) == [k * h for k in range(8)] + [936_000]


def test_short_window_is_zero_padded_at_the_end() -> None:
    x = torch.arange(1.0, 8.0)
    assert ref.windows(x, 10, 3).tolist() == [[1, 2, 3, 4, 5, 6, 7, 0, 0, 0]]
    assert ref.windows(torch.arange(11.0), 10, 3)[1].tolist() == list(range(1, 11))


def test_mono_is_a_plain_channel_mean() -> None:
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]], dtype=np.float64)
    out = ref.mono(x)
    assert out.dtype == torch.float32 and out.tolist() == [3.0, 3.0]
    assert ref.mono(np.array([1.0, -1.0])).tolist() == [1.0, -1.0]


def test_enrich_of_one_frame_is_the_normalised_mean_then_zeros() -> None:
    out = ref.enrich(torch.tensor([[3.0], [4.0]]))
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx([0.6, 0.8, 0, 0, 0, 0])


def test_enrich_matches_a_hand_computation() -> None:
    frames = torch.tensor([[1.0, 2.0, 4.0, 8.0], [2.0, -2.0, 2.0, -2.0]])
    c = 1.3489795003921634
    # row 0: mean 3.75; q25 at position 0.75 → 1.75, q75 at 2.25 → 5; diffs 1, 2, 4 → 7/3
    # row 1: mean 0; sorted −2, −2, 2, 2: q25 −2, q75 2; diffs −4, 4, −4 → −4/3
    raw = [3.75, 0.0, 3.25 / c, 4 / c, 7 / 3, -4 / 3]
    norm = math.sqrt(sum(v * v for v in raw))
    assert ref.enrich(frames).tolist() == pytest.approx([v / norm for v in raw], rel=1e-6)


def test_music2latent_rows_interleave_then_magnitudes() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.0, 5.0]])
    b = torch.tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    rows = ref.interleaved_rows(a, b)
    assert rows.shape == (9, 2)
    assert rows[:6].tolist() == [[1, 2], [10, 20], [3, -4], [30, 40], [0, 5], [50, 60]]
    torch.testing.assert_close(rows[6:], torch.sqrt(a**2 + b**2 + 1e-12))
    mono_rows = ref.interleaved_rows(a, torch.zeros_like(a))
    assert mono_rows[:6].tolist() == [[1, 2], [0, 0], [3, -4], [0, 0], [0, 5], [0, 0]]
    torch.testing.assert_close(mono_rows[6:], torch.tensor([[1.0, 2.0], [3.0, 4.0], [1e-6, 5.0]]), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------- models


def write_muq_repos(root: Path) -> Path:
    """MuQ-MuLan's three repositories in the ``--weights`` layout, tiny and random, from the real classes (built
    here rather than by ``tiny_muq``, which imports the production embedders)."""
    from muq import MuQ, MuQMuLan
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    backbone, text, mulan = root / ref.MUQ_BACKBONE_DIR, root / ref.MUQ_TEXT_DIR, root / ref.MUQ_MULAN_DIR
    MuQ({"conv_dim": 4, "encoder_dim": 32, "encoder_depth": 2, "codebook_size": 16, "codebook_dim": 4,
         "stat": {"melspec_2048_mean": 6.77, "melspec_2048_std": 19.0},
         "w2v2_config": {"position_embeddings_type": "rotary", "rotary_embedding_base": 10_000,
                         "max_source_positions": 5_000, "num_attention_heads": 2, "intermediate_size": 37,
                         "hidden_act": "swish", "layer_norm_eps": 1e-5, "conv_depthwise_kernel_size": 3,
                         "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
                         "feat_extract_activation": "gelu", "hidden_dropout": 0.0, "attention_dropout": 0.0,
                         "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "conformer_conv_dropout": 0.0,
                         "layerdrop": 0.0}}).save_pretrained(backbone)
    XLMRobertaModel(XLMRobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=37, max_position_embeddings=40)).save_pretrained(text)
    head = {"dim": 24, "tf_depth": 1, "heads": 2, "dim_head": 8}
    config = {"mulan": {"sr": 24_000, "clip_secs": 10, "dim_latent": 512},
              "audio_model": {"name": "OpenMuQ/MuQ-large-msd-iter", "model_dim": 32, "use_layer_idx": -1},
              "text_model": {"name": "FacebookAI/xlm-roberta-base", "model_dim": 32},
              "audio_transformer": head, "text_transformer": head}
    local = config | {"audio_model": config["audio_model"] | {"name": str(backbone)},
                      "text_model": config["text_model"] | {"name": str(text)}}
    model = MuQMuLan(local)
    with torch.no_grad():
        for parameter in model.parameters():  # differ from the sub-models' weights, as after MuLan training
            parameter.add_(0.05 * torch.randn_like(parameter))
    mulan.mkdir()
    (mulan / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), mulan / "pytorch_model.bin")
    return root


def test_muq_reference(tmp_path: Path) -> None:
    model = ref.load_muq(write_muq_repos(tmp_path / "muq"))
    vector, t = ref.muq_reference(model, tone(10, 44_100), 44_100)
    assert t == 1  # 10 s < 120 s: one window at 0, zero-padded
    assert_unit(vector, 1536)
    assert torch.count_nonzero(vector[512:]) == 0
    # 130 s: 0 + 120 ≤ 130 < 15 + 120, and the window [0, 120 s) ends before 130 s → one more at 10 s.
    vector, t = ref.muq_reference(model, tone(130, 24_000, channels=1)[0], 24_000)
    assert t == 2
    assert_unit(vector, 1536)


def test_mert_reference(tmp_path: Path) -> None:
    from tiny_weights import FRAME_DIM, write_snapshot

    write_snapshot(tmp_path / "mert")
    model, extractor = ref.load_mert(tmp_path / "mert")
    vector, t = ref.mert_reference(model, extractor, tone(10, 48_000), 48_000)
    assert t == 1  # 10 s < 30 s
    assert_unit(vector, 3 * FRAME_DIM)
    assert torch.count_nonzero(vector[FRAME_DIM:]) == 0
    vector, t = ref.mert_reference(model, extractor, tone(40, 24_000, channels=1), 24_000)
    assert t == 3  # starts 0, 5, 10 s; 10 + 30 = 40 s is the end
    assert_unit(vector, 3 * FRAME_DIM)


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory):
    """A music2latent ``EncoderDecoder`` with a reduced-width random ``UNet`` (64 latent channels kept)."""
    directory = tmp_path_factory.mktemp("m2l")
    with ref.unet_globals(REDUCED_UNET):
        torch.manual_seed(0)
        unet = music2latent.models.UNet()
    with torch.no_grad():
        for parameter in unet.parameters():  # the package zero-initialises some convolutions
            parameter.add_(0.05 * torch.randn_like(parameter))
    torch.save({"gen_state_dict": unet.state_dict()}, directory / "music2latent.pt")
    return ref.load_music2latent(directory / "music2latent.pt", REDUCED_UNET)


def latent_frames(samples_at_44k: int) -> int:
    """``encode`` crops to 1536 + a multiple of 4096 samples and gives one latent per 4096."""
    return (samples_at_44k - 1536) // 4096


def test_music2latent_reference(codec, tmp_path: Path) -> None:
    vector, t = ref.music2latent_reference(codec, tone(3, 48_000), 48_000, tmp_path)
    assert t == latent_frames(132_300) == 31  # 3 s at 44.1 kHz
    assert_unit(vector, 576)
    for block in range(3):  # mean, spread, drift: each block's interleaved zero rows stay zero
        assert torch.count_nonzero(vector[192 * block + 1:192 * block + 128:2]) == 0
        assert torch.count_nonzero(vector[192 * block:192 * block + 128:2]) > 0
    vector, t = ref.music2latent_reference(codec, tone(12, 44_100, channels=1)[0], 44_100, tmp_path)
    assert t == latent_frames(12 * 44_100) == 128  # two 10 s chunks joined, the repeated fill dropped
    assert_unit(vector, 576)
    assert list(tmp_path.iterdir()) == []  # the temporary WAV is removed


def test_music2latent_stereo_reference(codec, tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, tone(3, 44_100).T, 44_100, subtype="PCM_16")
    vector, t = ref.music2latent_stereo_reference(codec, stereo)
    assert t == 31
    assert_unit(vector, 576)
    assert torch.count_nonzero(vector[1:128:2]) > 0  # the right channel's rows are not zero
    mono = tmp_path / "mono.wav"
    soundfile.write(mono, tone(3, 44_100, channels=1)[0], 44_100, subtype="PCM_16")
    with pytest.raises(ValueError, match="two-channel"):
        ref.music2latent_stereo_reference(codec, mono)
