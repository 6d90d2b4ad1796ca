from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from embedders import EmbedderUnavailableError, embedder_names, embedder_spec, get_embedder, stored_dim
from embedders.base import Embedder
from embedders.dsp import DspEmbedder
from embedders.enrichment import ENRICHMENT, enrich
from embedders.runtime import embed_clip, embed_clips, shard_attributes
from embedders.spec import NAVIDROME_SPACE, EmbedderSpec
from store.shards import Embedded, ShardWriter, open_shard
from store.status import StatusRecord

CLIP_RATE = 44_100


def sine(hz: float, seconds: float, rate: int = CLIP_RATE, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def hiss(seconds: float, seed: int, rate: int = CLIP_RATE) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(round(seconds * rate))).astype(np.float32)


def write_clip(path: Path, frames_first: np.ndarray, rate: int = CLIP_RATE) -> Path:
    """A canonical clip: 16-bit FLAC, ``[frames]`` (mono) or ``[frames, 2]`` (stereo)."""
    sf.write(path, frames_first, rate, subtype="PCM_16", format="FLAC")
    return path


@pytest.fixture()
def clips(tmp_path: Path) -> list[tuple[str, Path]]:
    chord = sine(261.63, 12) + sine(329.63, 12, amplitude=0.2) + sine(392.0, 12, amplitude=0.2)
    stereo = np.stack([sine(880, 5), hiss(5, seed=1)], axis=1)
    short_stereo = np.stack([hiss(1.5, seed=2), hiss(1.5, seed=3)], axis=1)
    return [
        ("toy:mono-a440", write_clip(tmp_path / "mono-a440.flac", sine(440, 3))),
        ("toy:stereo", write_clip(tmp_path / "stereo.flac", stereo)),
        ("toy:chord", write_clip(tmp_path / "chord.flac", chord / 2)),
        ("toy:short-stereo", write_clip(tmp_path / "short.flac", short_stereo)),
    ]


def vectors_of(results: list[tuple[str, Embedded | StatusRecord]]) -> dict[str, np.ndarray]:
    return {item_id: value.vector for item_id, value in results if isinstance(value, Embedded)}


class RecordingDsp(DspEmbedder):
    """The real ``dsp`` embedder, remembering the batch shapes the runtime hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, ...]] = []

    def frames(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.shape)
        return super().frames(batch)


class RefusesShortClips(DspEmbedder):
    """``dsp`` with a minimum input length, as a model with a receptive field has."""

    def frames(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[-1] < 2 * self.sample_rate:
            raise ValueError(f"needs at least 2 s of audio, got {batch.shape[-1]} samples")
        return super().frames(batch)


def test_every_clip_gets_one_unit_norm_vector_in_order(clips):
    results = list(embed_clips(get_embedder("dsp"), clips))

    assert [item_id for item_id, _ in results] == [item_id for item_id, _ in clips]
    vectors = vectors_of(results)
    assert len(vectors) == len(clips)
    seconds = {"toy:mono-a440": 3, "toy:stereo": 5, "toy:chord": 12, "toy:short-stereo": 1.5}
    assert {item_id: result.frames for item_id, result in results} == {  # dsp: 1 + N // 512 frames at 22 050 Hz
        item_id: 1 + round(s * 22_050) // 512 for item_id, s in seconds.items()}
    for vector in vectors.values():
        assert vector.shape == (3 * DspEmbedder.frame_dim,) and vector.dtype == np.float32
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    stacked = np.stack(list(vectors.values()))
    off_diagonal = (stacked @ stacked.T)[~np.eye(len(stacked), dtype=bool)]
    assert off_diagonal.max() < 0.99, "different clips must not collapse onto one vector"


def test_bad_clips_fail_alone_with_reasons_while_the_others_succeed(clips, tmp_path):
    good = dict(embed_clips(get_embedder("dsp"), clips))
    flac_bytes = clips[2][1].read_bytes()
    (tmp_path / "truncated.flac").write_bytes(flac_bytes[: len(flac_bytes) // 3])
    (tmp_path / "garbage.flac").write_bytes(b"this is not audio\n" * 200)
    nan_samples = sine(440, 2)
    nan_samples[1000] = np.nan
    sf.write(tmp_path / "nan.wav", nan_samples, CLIP_RATE, subtype="FLOAT")
    bad = [
        ("toy:truncated", tmp_path / "truncated.flac"),
        ("toy:garbage", tmp_path / "garbage.flac"),
        ("toy:missing", tmp_path / "never-written.flac"),
        ("toy:nan", tmp_path / "nan.wav"),
    ]
    mixed = [bad[0], clips[0], bad[1], clips[1], bad[2], clips[2], bad[3], clips[3]]

    results = dict(embed_clips(get_embedder("dsp"), mixed))

    for item_id, _ in clips:
        np.testing.assert_array_equal(results[item_id].vector, good[item_id].vector)
        assert results[item_id].frames == good[item_id].frames
    failures = {item_id: results[item_id] for item_id, _ in bad}
    assert all(isinstance(r, StatusRecord) and not r.is_ok and r.stage == "embed" for r in failures.values())
    assert {item_id: r.reason for item_id, r in failures.items()} == {
        "toy:truncated": "truncated",
        "toy:garbage": "undecodable",
        "toy:missing": "missing_clip",
        "toy:nan": "non_finite_audio",
    }
    assert failures["toy:missing"].failure_class == "transient"
    assert failures["toy:truncated"].is_permanent_failure
    assert "truncated.flac" in failures["toy:truncated"].detail
    assert "preprocess" in failures["toy:truncated"].detail and "preprocess" in failures["toy:missing"].detail


def test_an_embedder_failure_on_one_clip_is_recorded_and_the_rest_go_on(clips):
    results = dict(embed_clips(RefusesShortClips(), clips))

    failed = results["toy:short-stereo"]
    assert isinstance(failed, StatusRecord) and failed.reason == "embedder_error"
    assert "needs at least 2 s" in failed.detail and "short.flac" in failed.detail
    assert all(isinstance(results[item_id], Embedded) for item_id, _ in clips[:3])


def test_vectors_round_trip_through_a_shard(clips, tmp_path):
    embedder = get_embedder("dsp")
    results = dict(embed_clips(embedder, clips))
    item_ids = list(results)

    directory = tmp_path / "embeddings" / embedder.spec.space / "dsp" / "toy"
    with ShardWriter(directory, shard_attributes(embedder)) as writer:
        writer.append(item_ids, np.stack([results[i].vector for i in item_ids]), [results[i].frames for i in item_ids])
    shard = open_shard(writer.path)

    assert shard.item_ids == item_ids
    np.testing.assert_array_equal(shard.embeddings(), np.stack([results[i].vector for i in item_ids]))
    np.testing.assert_array_equal(shard.frames(), [results[i].frames for i in item_ids])
    assert shard.space == "musictext-dsp-1" == embedder_spec("dsp").space
    assert shard.attrs["precision"] == "reference" and shard.attrs["weights_sha256"] == ""
    assert shard.attrs["audio_input"] == embedder_spec("dsp").audio_input
    assert shard.attrs["window_padding"] == "none"
    assert shard.attrs["model"] == "dsp" and shard.attrs["model_revision"] == DspEmbedder.revision
    assert shard.attrs["dim"] == 312 and shard.attrs["enrichment"] == ENRICHMENT
    assert shard.attrs["sample_rate"] == 22_050
    assert shard.attrs["window_s"] == pytest.approx(2048 / 22_050)
    assert shard.attrs["hop_s"] == pytest.approx(512 / 22_050)


def test_a_clip_at_another_rate_is_resampled_to_the_same_embedding(tmp_path):
    music_like = sine(440, 4) + sine(1234, 4, amplitude=0.2) + hiss(4, seed=4)
    native = soxr.resample(music_like, CLIP_RATE, 22_050, quality="VHQ")
    at_22k = write_clip(tmp_path / "native.flac", native, rate=22_050)
    at_44k = write_clip(tmp_path / "resampled.flac", music_like)
    dsp = get_embedder("dsp")

    assert embed_clip(dsp, at_22k).vector @ embed_clip(dsp, at_44k).vector > 0.999


def test_a_short_clip_is_one_chunk_with_exactly_the_whole_clip_frames(tmp_path):
    stereo = np.stack([sine(440, 3), hiss(3, seed=6)], axis=1)
    path = write_clip(tmp_path / "stereo.flac", stereo)
    dsp = RecordingDsp()

    embedded = embed_clip(dsp, path, chunk_s=2.0)

    assert dsp.batches == [(1, 1, 3 * 22_050)]
    mono = soxr.resample(sf.read(path, dtype="float32")[0].mean(axis=1), CLIP_RATE, 22_050, quality="HQ")
    frames = dsp.frames(mono[None, None].astype(np.float32))
    np.testing.assert_allclose(embedded.vector, enrich(frames)[0], atol=1e-6)
    assert embedded.frames == frames.shape[-1]


def test_long_clips_are_embedded_in_bounded_chunks_covering_every_sample(tmp_path):
    path = write_clip(tmp_path / "long.flac", sine(330, 25) + hiss(25, seed=7))
    chunked, whole = RecordingDsp(), RecordingDsp()

    from_chunks = embed_clip(chunked, path, chunk_s=4.0)
    from_whole = embed_clip(whole, path, chunk_s=60.0)

    lengths = [shape[-1] for shape in chunked.batches]
    assert len(lengths) > 1 and max(lengths) < 2 * 4.0 * 22_050
    assert all(length % DspEmbedder.hop_length == 0 for length in lengths[:-1])
    assert sum(lengths) == whole.batches[0][-1] == 25 * 22_050
    assert from_chunks.vector @ from_whole.vector > 0.999
    assert from_chunks.frames == sum(1 + length // 512 for length in lengths)
    assert from_whole.frames == 1 + 25 * 22_050 // 512


def _spec(name: str, frame_dim: int) -> EmbedderSpec:
    """A spec for an embedder defined in a test (not registered: it is handed to the runtime directly)."""
    return EmbedderSpec(name=name, summary="test embedder", factory=lambda weights, device, precision: None,
                        space=f"test-{name}", frame_dim=frame_dim, sample_rate=22_050, window_s=0.1, hop_s=0.1,
                        audio_input="test")


class StereoProbe:
    """A two-channel embedder whose frames are the per-channel mean level, to see what it is fed."""

    spec = _spec("probe", 2)
    revision, channels, weights_sha256, precision, frame_dim = "0", 2, "", "reference", 2

    def frames(self, batch: np.ndarray) -> np.ndarray:
        framed = batch[..., : batch.shape[-1] // 2205 * 2205].reshape(*batch.shape[:2], -1, 2205)
        return np.sqrt((framed**2).mean(axis=-1))


def test_mono_clips_are_duplicated_for_stereo_embedders(clips):
    vectors = dict(embed_clips(StereoProbe(), clips[:2]))

    mono, stereo = vectors["toy:mono-a440"].vector, vectors["toy:stereo"].vector
    assert isinstance(StereoProbe(), Embedder)
    assert mono[0] == pytest.approx(mono[1])
    assert stereo[0] != pytest.approx(stereo[1], rel=0.05)


class ConstantEmbedder:
    """Frames of a fixed shape and value, to drive the runtime's checks on what an embedder returns."""

    spec = _spec("constant", 4)
    revision, channels, weights_sha256, precision, frame_dim = "0", 1, "", "reference", 4

    def __init__(self, value: float, dim: int = 4):
        self.value, self.dim = value, dim

    def frames(self, batch: np.ndarray) -> np.ndarray:
        return np.full((batch.shape[0], self.dim, 10), self.value, dtype=np.float32)


def test_all_zero_features_are_a_failed_record_not_a_stored_vector(clips):
    [(_, record)] = list(embed_clips(ConstantEmbedder(0.0), clips[:1]))

    assert isinstance(record, StatusRecord) and record.reason == "zero_embedding"


def test_an_embedder_breaking_the_frame_contract_stops_the_unit(clips):
    with pytest.raises(RuntimeError, match="broke its contract"):
        list(embed_clips(ConstantEmbedder(1.0, dim=5), clips[:1]))


def test_registry_lists_every_embedder_and_names_them_for_an_unknown_one():
    assert embedder_names() == ["dsp", "mert", "muq", "music2latent", "music2latent-stereo"]
    assert isinstance(get_embedder("dsp"), DspEmbedder)
    available = "dsp, mert, muq, music2latent, music2latent-stereo"
    with pytest.raises(EmbedderUnavailableError, match=f"unknown embedder 'wav2vec'; available: {available}"):
        get_embedder("wav2vec")


@pytest.mark.parametrize("name", ["mert", "music2latent", "music2latent-stereo", "muq"])
def test_model_embedders_without_the_models_extra_say_how_to_get_it(name: str):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip(f"torch is installed here: tests/models covers {name}")
    how = rf"'{name}' needs the models extra.*pip install -e '\.\[models\]'"
    with pytest.raises(EmbedderUnavailableError, match=how):
        get_embedder(name)


def test_stored_dims_match_the_architecture():
    names = ("dsp", "muq", "mert", "music2latent", "music2latent-stereo")
    assert [stored_dim(name) for name in names] == [312, 1536, 76_800, 576, 576]


def test_specs_name_their_space_without_loading_a_model():
    assert embedder_spec("dsp").space == "musictext-dsp-1"
    assert {embedder_spec(name).space for name in ("muq", "mert", "music2latent", "music2latent-stereo")} == {
        NAVIDROME_SPACE}
    assert not embedder_spec("dsp").device and embedder_spec("dsp").weights is None
    assert all(embedder_spec(name).device and embedder_spec(name).weights is not None
               for name in ("muq", "mert", "music2latent", "music2latent-stereo"))
