"""Music2Latent adapter against the package's real ``UNet`` (a reduced width set through the package's own
hyper-parameter globals, 64 latent channels kept) with random weights, compared with the package's own
``EncoderDecoder.encode(audio, max_waveform_length=441000)``, and loaded the way production loads
``music2latent.pt``: from a local directory and from a Hugging Face cache laid out on disk, offline.

What it computes is shared/navidrome.md's Music2Latent: the package's 10 s chunks (the last one filled with
the track's first columns) as pieces, their latents joined; rows ``[m0, 0, m1, 0, …]`` and ``sqrt(m² + 1e-12)``
for the mono path, ``[L0, R0, L1, R1, …]`` and ``sqrt(L² + R² + 1e-12)`` for the library job's stereo layout.

Runs in the models environment only (``.venv-models``, the ``models`` extra); skipped elsewhere.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="model tests run in .venv-models (the models extra)")
pytest.importorskip("music2latent")

import music2latent.hparams  # noqa: E402
import music2latent.inference  # noqa: E402
import soundfile  # noqa: E402
from hub_cache import sha256, write_hub_cache  # noqa: E402
from tiny_weights import piece_batch, write_music2latent_checkpoint  # noqa: E402

import embedders.music2latent as adapter  # noqa: E402
from embedders import embedder_spec, get_embedder  # noqa: E402
from embedders.audio_input import AudioInput  # noqa: E402
from embedders.enrichment import enrich  # noqa: E402
from embedders.music2latent import SPEC, WEIGHTS, Music2LatentEmbedder  # noqa: E402
from embedders.music2latent_stereo import SPEC as STEREO_SPEC  # noqa: E402
from embedders.spec import NAVIDROME_SPACE  # noqa: E402
from embedders.torch_runtime import TorchRuntime  # noqa: E402
from embedders.weights import LOCAL_REVISION, MissingWeightsError  # noqa: E402
from embedders.windows import Piece, TrackPlan  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:CUDA is not available or torch_xla is imported. Disabling autocast:UserWarning"
)  # the package's encode asks for CUDA autocast unconditionally

RATE = 44_100
FRAME_DIM = 192
CHUNK_COLUMNS = 856
"""STFT columns of the package's 10 s chunk: ``int(441000 / 512) // 8 · 8``."""
CHUNK = (CHUNK_COLUMNS - 1) * 512 + 2048
"""Samples whose STFT gives one chunk: 439 808."""
REVISION = "0123456789abcdef0123456789abcdef01234567"


def samples_for(frames: int) -> int:
    """The shortest track of ``frames`` latent frames: ``T = (N − 1536) // 4096``."""
    return frames * 4096 + 1536


def music(seconds: float, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``[channels, N]`` float32: different harmonics and noise per channel, changing every second."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    rows = []
    for _ in range(channels):
        notes = rng.uniform(110, 880, int(seconds) + 1)[(t // 1).astype(int)]
        rows.append(sum(np.sin(2 * np.pi * notes * k * t) / k for k in (1, 2, 3)) * 0.2
                    + 0.01 * rng.standard_normal(t.size))
    return np.stack(rows).astype(np.float32)


def package_latents(checkpoint: Path, audio: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """``[channels, 64, T]`` from the package's own ``encode``, as the reference calls it (download bypassed)."""
    monkeypatch.setattr(music2latent.inference, "download_model", lambda: None)
    codec = music2latent.inference.EncoderDecoder(load_path_inference=str(checkpoint), device="cpu")
    return codec.encode(audio, max_waveform_length=adapter.MAX_WAVEFORM_LENGTH).numpy()


def planned_frames(embedder: Music2LatentEmbedder, audio: np.ndarray) -> tuple[TrackPlan, np.ndarray]:
    """The plan of ``audio`` (``[channels, N]``) and its ``[192, T]`` frames: each piece through ``forward``
    alone, as the package encodes each chunk alone, then ``assemble``."""
    plan = embedder.plan(audio.shape[-1])
    with torch.inference_mode():
        outputs = [embedder.forward(piece_batch(audio, [piece]), piece.key)[0] for piece in plan.pieces]
        return plan, embedder.assemble(plan, outputs).numpy()


@pytest.fixture()
def weights(music2latent_weights: Path) -> Path:
    return music2latent_weights


def test_the_specs_declare_both_layouts_of_navidromes_latent(weights: Path) -> None:
    for spec, layout in ((SPEC, "mono"), (STEREO_SPEC, "stereo")):
        assert embedder_spec(spec.name) is spec
        assert (spec.space, spec.frame_dim, spec.stored_dim, spec.sample_rate) == (NAVIDROME_SPACE, 192, 576, RATE)
        assert (spec.window_s, spec.hop_s, spec.window_padding) == (10.0, 10.0, "repeat")
        assert spec.device and spec.weights is WEIGHTS
        embedder = get_embedder(spec.name, weights=weights)
        assert isinstance(embedder, Music2LatentEmbedder)
        assert (embedder.spec, embedder.layout, embedder.frame_dim, embedder.chunk_columns) == (
            spec, layout, FRAME_DIM, CHUNK_COLUMNS)
        assert spec.audio_input == embedder.audio_input.describe()
    assert SPEC.name == "music2latent" and STEREO_SPEC.name == "music2latent-stereo"
    assert adapter.AUDIO_INPUTS["mono"] == AudioInput(RATE, quantise_16bit=True)
    assert adapter.AUDIO_INPUTS["stereo"] == AudioInput(RATE, mono=False, resample=False)
    with pytest.raises(ValueError, match="layout must be one of mono, stereo"):
        Music2LatentEmbedder(weights, layout="left")


@pytest.mark.parametrize("samples", [0, 5631, 5632, 9727, 9728, 5 * RATE, samples_for(107), samples_for(107) + 4095])
def test_short_tracks_are_one_piece_of_their_cropped_length(weights: Path, samples: int) -> None:
    """Up to 107 frames (856 columns, the package's 10 s chunk) the package encodes the cropped track at once."""
    plan = Music2LatentEmbedder(weights).plan(samples)
    frames = max(0, (samples - 1536) // 4096)
    assert plan.frames == frames
    assert plan.pieces == ((Piece.span(0, samples_for(frames), samples_for(frames)),) if frames else ())


def test_long_tracks_are_the_packages_10s_chunks_the_last_one_filled_from_the_start(weights: Path) -> None:
    embedder = Music2LatentEmbedder(weights)
    hop = CHUNK_COLUMNS * 512  # 438 272 samples between chunk starts
    plan = embedder.plan(25 * RATE)  # 268 frames, 2144 columns: chunks of 856, 856 and 432 + 424 of filling
    assert plan.frames == 268
    tail, filling = 2144 - 2 * CHUNK_COLUMNS, 3 * CHUNK_COLUMNS - 2144
    assert plan.pieces == (
        Piece.span(0, CHUNK, CHUNK),
        Piece.span(hop, CHUNK, CHUNK),
        Piece(((2 * hop, (tail - 1) * 512 + 2048), (0, (filling - 1) * 512 + 2048)),
              (tail - 1) * 512 + 2048 + (filling - 1) * 512 + 2048),
    )
    assert plan.pieces[0].key == plan.pieces[1].key != plan.pieces[2].key

    exact = embedder.plan(samples_for(3 * 107) + 100)  # 2568 columns: three whole chunks, nothing to fill
    assert exact.frames == 321
    assert exact.pieces == tuple(Piece.span(index * hop, CHUNK, CHUNK) for index in range(3))

    one_more = embedder.plan(samples_for(108))  # 864 columns: a chunk, then 8 columns and 848 of filling
    assert one_more.frames == 108
    assert one_more.pieces[1].segments == ((hop, 2048 + 7 * 512), (0, 2048 + 847 * 512))


@pytest.mark.parametrize("seconds", [5.0, 10.0, 31.0, samples_for(2 * 107) / RATE],
                         ids=["5s", "10s", "31s", "two-whole-chunks"])
def test_mono_frames_are_the_packages_latents_interleaved_with_zeros_then_magnitudes(
    weights: Path, seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package's own ``encode`` of the same mono waveform, exactly: 5 s and 10 s in one piece, 31 s in
    four chunks whose last is mostly the track's head, and a track of exactly two chunks (the package encodes
    a third chunk of pure filling there and drops it; the plan does not run it)."""
    embedder = Music2LatentEmbedder(weights)
    audio = music(seconds, channels=1, seed=round(seconds))
    plan, frames = planned_frames(embedder, audio)
    expected = package_latents(weights / "music2latent.pt", audio, monkeypatch)[0]
    assert frames.dtype == np.float32 and frames.shape == (FRAME_DIM, plan.frames) == (FRAME_DIM, expected.shape[-1])
    np.testing.assert_array_equal(frames[0:128:2], expected)
    np.testing.assert_array_equal(frames[1:128:2], 0.0)
    np.testing.assert_allclose(frames[128:], np.sqrt(expected**2 + 1e-12), rtol=1e-6)


def test_stereo_frames_interleave_left_and_right_as_the_library_job_stores_them(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 s stereo: three chunks, the last filled with the head; each channel is the package's latent of that
    channel (which the package encodes alone, the adapter with its other channel: equal up to rounding)."""
    embedder = Music2LatentEmbedder(weights, layout="stereo")
    audio = music(25.0, channels=2, seed=25)
    plan, frames = planned_frames(embedder, audio)
    assert len(plan.pieces) == 3 and len(plan.pieces[-1].segments) == 2
    left, right = package_latents(weights / "music2latent.pt", audio, monkeypatch)
    assert frames.shape == (FRAME_DIM, left.shape[-1]) == (FRAME_DIM, 268)
    np.testing.assert_allclose(frames[0:128:2], left, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(frames[1:128:2], right, rtol=1e-5, atol=1e-4)
    magnitude = np.sqrt(frames[0:128:2] ** 2 + frames[1:128:2] ** 2 + 1e-12)
    np.testing.assert_allclose(frames[128:], magnitude, rtol=1e-6)
    assert np.abs(left - right).max() > 0.1


def test_pieces_of_one_shape_from_different_tracks_share_a_forward_pass(weights: Path) -> None:
    embedder = Music2LatentEmbedder(weights)
    tracks = [music(5.0, channels=1, seed=seed) for seed in (1, 2)]
    pieces = [embedder.plan(track.shape[-1]).pieces[0] for track in tracks]
    assert pieces[0].key == pieces[1].key
    batch = torch.cat([piece_batch(track, [piece]) for track, piece in zip(tracks, pieces, strict=True)])
    with torch.inference_mode():
        together = embedder.forward(batch, pieces[0].key)
        alone = embedder.forward(batch[1:], pieces[1].key)
    assert together.shape == (2, 1, 64, 53)
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-4)
    assert not torch.allclose(together[0], together[1], atol=1e-2)


def test_the_runtime_stores_the_enrichment_of_the_16_bit_mono_path(weights: Path, tmp_path: Path) -> None:
    """A 3 s 44.1 kHz stereo file: averaged to mono, through 16-bit PCM (as the reference's temporary WAV),
    one piece of 31 frames; the stored vector is the enrichment of those frames."""
    path = tmp_path / "clip.wav"
    audio = music(3.0, channels=2, seed=3)
    soundfile.write(path, audio.T, RATE, subtype="FLOAT")
    embedder = Music2LatentEmbedder(weights)
    [(_, embedded)] = TorchRuntime(embedder, num_workers=0).embed([("clip", path)])
    assert embedded.frames == 31 and embedded.vector.shape == (576,)
    wav = io.BytesIO()
    soundfile.write(wav, audio.mean(axis=0), RATE, format="WAV", subtype="PCM_16")
    quantised, _ = soundfile.read(io.BytesIO(wav.getvalue()), dtype="float32")
    _, frames = planned_frames(embedder, quantised[None])
    np.testing.assert_allclose(embedded.vector, enrich(frames[None])[0], atol=1e-6)


def test_the_package_geometry_is_checked(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(music2latent.hparams, "hop", 256)
    with pytest.raises(ValueError, match=r"hyper-parameters \(rate, hop, downsampling\) are \(44100, 256, 8\)"):
        Music2LatentEmbedder(weights)


def forward_once(embedder: Music2LatentEmbedder) -> torch.Tensor:
    audio = music(1.0, channels=1)
    piece = embedder.plan(audio.shape[-1]).pieces[0]
    with torch.inference_mode():
        return embedder.forward(piece_batch(audio, [piece]), piece.key)


def test_weights_load_from_the_hub_cache_offline_and_record_snapshot_and_checksum(
    weights: Path, hub_cache: Path
) -> None:
    files = write_hub_cache(hub_cache, WEIGHTS.repo_id, [weights / "music2latent.pt"], REVISION)
    embedder = Music2LatentEmbedder()
    assert embedder.revision == REVISION
    assert embedder.weights_sha256 == sha256(weights / "music2latent.pt")
    torch.testing.assert_close(forward_once(embedder), forward_once(Music2LatentEmbedder(weights)), rtol=0, atol=0)
    assert Music2LatentEmbedder(weights).revision == LOCAL_REVISION
    assert Music2LatentEmbedder(files).revision == REVISION  # a snapshot directory passed as --weights


def test_a_checkpoint_with_another_checksum_than_the_pinned_one_is_never_unpickled(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Marker:
        def __reduce__(self) -> tuple:
            return (Path.touch, (tmp_path / "unpickled",))

    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "music2latent.pt").write_bytes(pickle.dumps({"gen_state_dict": {}, "marker": Marker()}))
    pinned = dataclasses.replace(WEIGHTS, sha256=sha256(weights / "music2latent.pt"))
    monkeypatch.setattr(adapter, "WEIGHTS", pinned)
    with pytest.raises(ValueError, match=r"has sha256 .* not loaded.*musictext models fetch music2latent"):
        Music2LatentEmbedder(trap)
    assert not (tmp_path / "unpickled").exists()
    assert Music2LatentEmbedder(weights).weights_sha256 == adapter.WEIGHTS.sha256


def test_checkpoints_without_the_encoder_weights_are_refused(tmp_path: Path, narrow_unet: None) -> None:
    path = write_music2latent_checkpoint(tmp_path / "partial")
    state = torch.load(path, weights_only=False)["gen_state_dict"]
    del state["encoder.conv_out.weight"]
    torch.save({"gen_state_dict": state}, path)
    mismatch = "(?s)do not match music2latent's UNet encoder.*Missing.*conv_out.weight"
    with pytest.raises(ValueError, match=mismatch):
        Music2LatentEmbedder(tmp_path / "partial")
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match="no 'gen_state_dict'"):
        Music2LatentEmbedder(tmp_path / "partial")


def test_missing_weights_stop_before_loading_and_say_what_to_run(
    weights: Path, hub_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(MissingWeightsError, match="musictext models fetch music2latent") as empty:
        Music2LatentEmbedder()
    assert str(hub_cache) in str(empty.value) and "SonyCSLParis/music2latent" in str(empty.value)

    (weights / "music2latent.pt").unlink()
    with pytest.raises(MissingWeightsError, match=r"missing music2latent\.pt\. It needs music2latent\.pt;"):
        Music2LatentEmbedder(weights)
    with pytest.raises(MissingWeightsError, match="is not a directory.*musictext models fetch music2latent"):
        Music2LatentEmbedder(tmp_path / "nowhere")
