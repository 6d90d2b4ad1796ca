"""MERT adapter against transformers' real ``HubertModel`` with tiny random weights, loaded the way production
loads the MERT snapshot: from a local directory and from a Hugging Face cache laid out on disk, offline.

What it computes is shared/navidrome.md's MERT: 30 s windows every 5 s (one more ending at the track's end),
a short track zero-padded to one 30 s window, each window normalised by the feature extractor *after*
padding, and the time-mean of all hidden states, layer 0 first, as the window's frame.

Runs in the models environment only (``.venv-models``, the ``models`` extra; ``make test`` builds it);
skipped elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="model tests run in .venv-models (the models extra): make test builds it")
transformers = pytest.importorskip("transformers")

import soundfile  # noqa: E402
from hub_cache import sha256, write_hub_cache  # noqa: E402
from tiny_weights import FRAME_DIM, HIDDEN, LAYERS, RATE, music, piece_batch, write_snapshot  # noqa: E402
from transformers import HubertModel, Wav2Vec2FeatureExtractor  # noqa: E402

from embedders import get_embedder, stored_dim  # noqa: E402
from embedders.audio_input import AudioInput  # noqa: E402
from embedders.base import Embedder  # noqa: E402
from embedders.enrichment import enrich  # noqa: E402
from embedders.mert import SPEC, WEIGHTS, MertEmbedder  # noqa: E402
from embedders.spec import NAVIDROME_SPACE  # noqa: E402
from embedders.torch_runtime import TorchRuntime  # noqa: E402
from embedders.weights import LOCAL_REVISION, MissingWeightsError  # noqa: E402
from embedders.windows import Piece  # noqa: E402

WINDOW, HOP = 30 * RATE, 5 * RATE
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
"""The adapter normalises in float64, the feature extractor in float32."""


def forward(embedder: MertEmbedder, audio: np.ndarray, pieces: Sequence[Piece]) -> np.ndarray:
    with torch.inference_mode():
        return embedder.forward(piece_batch(audio, pieces), pieces[0].key).numpy()


def normalised(window: np.ndarray) -> np.ndarray:
    """What the model's own feature extractor makes of one window."""
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True)
    return extractor(window, sampling_rate=RATE, return_tensors="np")["input_values"][0]


def expected_frame(model: HubertModel, window: np.ndarray) -> np.ndarray:
    """``[(L+1)·H]``: every hidden state of ``window`` (the model's input as is) averaged over time, layer 0
    first, straight from the model."""
    with torch.inference_mode():
        output = model(torch.from_numpy(window)[None], output_hidden_states=True)
    return np.concatenate([state[0].numpy().mean(axis=0) for state in output.hidden_states])


def padded(audio: np.ndarray, size: int = WINDOW) -> np.ndarray:
    return np.pad(audio, (0, size - audio.size))


def test_the_spec_declares_navidromes_mert_and_the_embedder_carries_it(snapshot: Path) -> None:
    assert (SPEC.name, SPEC.space, SPEC.frame_dim, SPEC.stored_dim) == ("mert", NAVIDROME_SPACE, 25_600, 76_800)
    assert (SPEC.sample_rate, SPEC.window_s, SPEC.hop_s, SPEC.window_padding) == (RATE, 30.0, 5.0, "zeros")
    assert SPEC.device and SPEC.weights is WEIGHTS and stored_dim("mert") == 76_800
    assert SPEC.audio_input == AudioInput(RATE).describe() == "mono mean; torchaudio resample to 24000 Hz"
    embedder = get_embedder("mert", weights=snapshot, precision="bf16")
    assert isinstance(embedder, MertEmbedder) and isinstance(embedder, Embedder)
    assert (embedder.spec, embedder.precision, embedder.device.type) == (SPEC, "bf16", "cpu")
    assert (embedder.frame_dim, embedder.piece_s, embedder.window, embedder.hop) == (FRAME_DIM, 30.0, WINDOW, HOP)
    assert embedder.audio_input == AudioInput(RATE)


@pytest.mark.parametrize(("samples", "starts"), [
    (0, []),
    (1, [0]),
    (5 * RATE, [0]),
    (WINDOW, [0]),
    (WINDOW + 1, [0, 1]),  # one more window, ending at the track's end
    (31 * RATE, [0, RATE]),
    (36 * RATE, [0, HOP, 6 * RATE]),
    (40 * RATE, [0, HOP, 2 * HOP]),  # the last window ends at the end: none added
    (600 * RATE, list(range(0, 571 * RATE, HOP))),
], ids=["empty", "one-sample", "5s", "30s", "30s+1", "31s", "36s", "40s", "10min"])
def test_the_plan_is_one_30s_window_every_5s_zero_padded_to_30s(
    snapshot: Path, samples: int, starts: list[int]
) -> None:
    plan = MertEmbedder(snapshot).plan(samples)
    assert plan.frames == len(starts) == len(plan.pieces)
    assert plan.pieces == tuple(Piece.span(start, min(WINDOW, samples - start), WINDOW) for start in starts)
    assert all(piece.size == WINDOW for piece in plan.pieces)
    if samples == 600 * RATE:
        assert plan.frames == 115 and {piece.key for piece in plan.pieces} == {(WINDOW,)}


def test_a_short_track_is_one_window_zero_padded_then_normalised_as_the_model_sees_it(snapshot: Path) -> None:
    """7 s: the feature extractor's statistics are those of the padded 30 s window, not of the 7 s of audio."""
    embedder = MertEmbedder(snapshot)
    model = HubertModel.from_pretrained(snapshot)
    audio = music(7.0, seed=4)[0]
    plan = embedder.plan(audio.size)
    got = forward(embedder, audio, plan.pieces)
    assert got.dtype == np.float32 and got.shape == (1, FRAME_DIM)
    expected = expected_frame(model, normalised(padded(audio)))
    np.testing.assert_allclose(got[0], expected, **TOLERANCE)
    normalised_before_padding = expected_frame(model, padded(normalised(audio)))
    assert np.abs(got[0] - normalised_before_padding).max() > 1e-2
    frames = embedder.assemble(plan, list(torch.from_numpy(got)))
    assert frames.shape == (FRAME_DIM, 1)
    np.testing.assert_array_equal(frames[:, 0].numpy(), got[0])


def test_each_window_is_the_time_mean_of_every_hidden_state_layer_0_first(snapshot: Path) -> None:
    """36 s: windows at 0, 5 and 6 s in one batch; each is the model's own output for that window alone."""
    embedder = MertEmbedder(snapshot)
    model = HubertModel.from_pretrained(snapshot)
    audio = music(36.0, seed=5)[0]
    plan = embedder.plan(audio.size)
    got = forward(embedder, audio, plan.pieces)
    for row, start in enumerate((0, HOP, 6 * RATE)):
        expected = expected_frame(model, normalised(audio[start : start + WINDOW]))
        np.testing.assert_allclose(got[row], expected, **TOLERANCE)
    assert not np.allclose(got[0], got[1], atol=1e-3)
    frames = embedder.assemble(plan, list(torch.from_numpy(got)))
    np.testing.assert_array_equal(frames.numpy(), got.T)
    alone = forward(embedder, audio, plan.pieces[2:])
    np.testing.assert_allclose(alone[0], got[2], atol=1e-5)  # batch mates change nothing


def test_do_normalize_from_the_preprocessor_config_is_followed(tmp_path: Path) -> None:
    """The first convolution's GroupNorm already removes most of a gain, except where its epsilon dominates:
    on quiet audio. There normalising or not makes a large difference."""
    audio = music(30.0)[0]
    quiet = (1e-3 * audio).astype(np.float32)
    piece = (Piece.span(0, audio.size, WINDOW),)

    on_model = write_snapshot(tmp_path / "on", do_normalize=True)
    on = MertEmbedder(tmp_path / "on")
    assert on.normalize
    np.testing.assert_allclose(forward(on, quiet, piece), forward(on, audio, piece), atol=5e-3)
    np.testing.assert_allclose(forward(on, quiet, piece)[0], expected_frame(on_model, normalised(padded(quiet))),
                               **TOLERANCE)

    off_model = write_snapshot(tmp_path / "off", do_normalize=False)
    off = MertEmbedder(tmp_path / "off")
    assert not off.normalize
    np.testing.assert_allclose(forward(off, quiet, piece)[0], expected_frame(off_model, padded(quiet)), atol=1e-5)
    assert np.abs(forward(off, quiet, piece) - forward(off, audio, piece)).max() > 1.0


def test_the_runtime_stores_the_enrichment_of_the_windows_frames(snapshot: Path, tmp_path: Path) -> None:
    """A 7 s 24 kHz file (no resampling): one window, so the vector is ``[mean, 0, 0]`` normalised."""
    path = tmp_path / "clip.flac"
    soundfile.write(path, music(7.0, seed=7)[0], RATE)
    audio, _ = soundfile.read(path, dtype="float32")
    embedder = MertEmbedder(snapshot)
    [(item_id, embedded)] = TorchRuntime(embedder, num_workers=0).embed([("clip", path)])
    assert (item_id, embedded.frames) == ("clip", 1)
    expected = expected_frame(HubertModel.from_pretrained(snapshot), normalised(padded(audio)))
    assert embedded.vector.shape == (3 * FRAME_DIM,) and embedded.vector.dtype == np.float32
    np.testing.assert_allclose(embedded.vector, enrich(expected[None, :, None])[0], **TOLERANCE)
    assert not np.any(embedded.vector[FRAME_DIM:])  # T = 1: no spread, no drift


def test_bf16_runs_under_autocast_close_to_float32(snapshot: Path) -> None:
    audio = music(4.0, seed=8)[0]
    piece = (Piece.span(0, audio.size, WINDOW),)
    reference = forward(MertEmbedder(snapshot), audio, piece)[0]
    fast = forward(MertEmbedder(snapshot, precision="bf16"), audio, piece)[0]
    assert fast.dtype == np.float32
    cosine = fast @ reference / np.linalg.norm(fast) / np.linalg.norm(reference)
    assert cosine > 0.99 and not np.array_equal(fast, reference)


def test_the_last_state_is_the_final_layer_norm_output_even_where_transformers_5_reports_it_before(
    snapshot: Path,
) -> None:
    """transformers 5 returns the state before the encoder's final LayerNorm as ``hidden_states[-1]``."""
    embedder = MertEmbedder(snapshot)
    audio = music(2.0)[0]
    piece = (Piece.span(0, audio.size, WINDOW),)
    reference = forward(embedder, audio, piece)
    encoder = embedder.model.encoder
    before_norm: list[torch.Tensor] = []
    hooks = [
        encoder.layer_norm.register_forward_pre_hook(lambda _module, args: before_norm.append(args[0])),
        encoder.register_forward_hook(
            lambda _module, _args, output: output.__setitem__(
                "hidden_states", (*output.hidden_states[:-1], before_norm[-1])
            )
        ),
    ]
    try:
        with torch.inference_mode():
            reported = embedder.model(torch.from_numpy(normalised(padded(audio)))[None], output_hidden_states=True)
        assert not torch.allclose(reported.hidden_states[-1], reported.last_hidden_state, atol=1e-3)
        guarded = forward(embedder, audio, piece)
    finally:
        for hook in hooks:
            hook.remove()
    np.testing.assert_array_equal(guarded, reference)
    np.testing.assert_allclose(guarded[0, LAYERS * HIDDEN :], reported.last_hidden_state[0].numpy().mean(axis=0),
                               **TOLERANCE)


def test_weights_load_from_the_hub_cache_at_the_pinned_revision_offline(
    snapshot: Path, hub_cache: Path
) -> None:
    files = write_hub_cache(hub_cache, WEIGHTS.repo_id, snapshot.iterdir(), WEIGHTS.revision)
    embedder = MertEmbedder()
    assert embedder.revision == WEIGHTS.revision
    assert embedder.weights_sha256 == sha256(snapshot / "model.safetensors")
    assert (files / "model.safetensors").resolve().name == embedder.weights_sha256
    audio = music(1.0)[0]
    piece = (Piece.span(0, audio.size, audio.size),)
    np.testing.assert_array_equal(forward(embedder, audio, piece), forward(MertEmbedder(snapshot), audio, piece))
    assert MertEmbedder(files).revision == WEIGHTS.revision  # a snapshot directory passed as --weights


def test_a_local_directory_records_its_checksum_and_loads_2023_weight_norm_names(tmp_path: Path) -> None:
    model = write_snapshot(tmp_path / "legacy", legacy_bin=True)
    embedder = MertEmbedder(tmp_path / "legacy")
    assert embedder.revision == LOCAL_REVISION
    assert embedder.weights_sha256 == sha256(tmp_path / "legacy" / "pytorch_model.bin")
    audio = music(1.0)[0]
    got = forward(embedder, audio, (Piece.span(0, audio.size, audio.size),))
    np.testing.assert_allclose(got[0], expected_frame(model, normalised(audio)), **TOLERANCE)


def test_missing_weights_stop_before_loading_and_say_what_to_run(
    snapshot: Path, hub_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(MissingWeightsError, match="musictext models fetch mert") as empty:
        MertEmbedder()
    assert str(hub_cache) in str(empty.value) and "m-a-p/MERT-v1-330M" in str(empty.value)

    write_hub_cache(hub_cache, WEIGHTS.repo_id, snapshot.iterdir(), "f" * 40)  # another revision than the pinned
    pinned = f"revision {WEIGHTS.revision[:12]}.*musictext models fetch mert"
    with pytest.raises(MissingWeightsError, match=pinned):
        MertEmbedder()

    (snapshot / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match=r"missing model\.safetensors or pytorch_model\.bin"):
        MertEmbedder(snapshot)
    with pytest.raises(MissingWeightsError, match="is not a directory.*musictext models fetch mert"):
        MertEmbedder(tmp_path / "nowhere")


def test_weights_that_hubert_cannot_reproduce_are_refused(tmp_path: Path) -> None:
    write_snapshot(tmp_path / "cqt", config_fields={"feature_extractor_cqt": True})
    with pytest.raises(ValueError, match="CQT features"):
        MertEmbedder(tmp_path / "cqt")

    write_snapshot(tmp_path / "deepnorm", config_fields={"deepnorm": True, "do_stable_layer_norm": False})
    with pytest.raises(ValueError, match="DeepNorm encoder"):
        MertEmbedder(tmp_path / "deepnorm")

    model = write_snapshot(tmp_path / "partial", legacy_bin=True)
    state = model.state_dict()
    del state["encoder.layers.1.final_layer_norm.weight"]
    torch.save(state, tmp_path / "partial" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="missing_keys.*final_layer_norm"):
        MertEmbedder(tmp_path / "partial")

    write_snapshot(tmp_path / "16k")
    preprocessor = tmp_path / "16k" / "preprocessor_config.json"
    preprocessor.write_text(json.dumps(json.loads(preprocessor.read_text()) | {"sampling_rate": 16_000}))
    with pytest.raises(ValueError, match="configures MERT for 16000 Hz"):
        MertEmbedder(tmp_path / "16k")
