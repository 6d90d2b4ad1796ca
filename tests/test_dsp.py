from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from embedders import embedder_spec
from embedders.base import Embedder
from embedders.dsp import FAMILIES, RECIPE, SPEC, DspEmbedder
from embedders.enrichment import enrich

SR = DspEmbedder.sample_rate
SECONDS = np.arange(3 * SR) / SR
PITCH_CLASS_A, PITCH_CLASS_C = 9, 0


@pytest.fixture(scope="module")
def dsp() -> DspEmbedder:
    return DspEmbedder()


def tone(hz: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * SECONDS)).astype(np.float32)


def noise(amplitude: float, seed: int = 0) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(SECONDS.size)).astype(np.float32)


def embed(dsp: DspEmbedder, samples: np.ndarray) -> np.ndarray:
    return enrich(dsp.frames(samples[None, None]))[0]


def piano_phrase() -> np.ndarray:
    """A few seconds of General-MIDI piano (octaves over a C–F progression), rendered by FluidSynth."""
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for step, pitch in enumerate([60, 64, 67, 72, 65, 69, 72, 77] * 2):
        start = step * 0.3
        piano.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=start, end=start + 0.5))
        piano.notes.append(pretty_midi.Note(velocity=70, pitch=pitch - 12, start=start, end=start + 0.6))
    midi.instruments.append(piano)
    audio = midi.fluidsynth(fs=SR)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def test_meets_the_embedder_contract(dsp):
    assert isinstance(dsp, Embedder)
    assert (dsp.name, dsp.channels, dsp.sample_rate) == ("dsp", 1, 22_050)
    assert dsp.frame_dim == 64 + 20 + 12 + 7 + 1 == sum(f.rows for f in FAMILIES)
    assert dsp.window_s == pytest.approx(2048 / 22_050) and dsp.hop_s == pytest.approx(512 / 22_050)


def test_its_spec_agrees_with_the_class_and_names_its_own_space(dsp):
    assert dsp.spec is SPEC is embedder_spec("dsp")
    assert (SPEC.name, SPEC.frame_dim, SPEC.sample_rate) == (dsp.name, dsp.frame_dim, dsp.sample_rate)
    assert (SPEC.window_s, SPEC.hop_s) == (dsp.window_s, dsp.hop_s)
    assert SPEC.stored_dim == 3 * dsp.frame_dim == 312
    assert SPEC.space == f"musictext-dsp-{RECIPE}" == "musictext-dsp-1"  # not Navidrome's space: its own
    assert (SPEC.weights, SPEC.device, dsp.weights_sha256, dsp.precision) == (None, False, "", "reference")


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large:UserWarning")  # 100 samples: zero-padded, fine
@pytest.mark.parametrize(("samples", "expected_frames"), [(SR, 1 + SR // 512), (512 * 10, 11), (100, 1)])
def test_frame_count_follows_the_hop(dsp, samples, expected_frames):
    batch = np.random.default_rng(3).uniform(-0.5, 0.5, size=(2, 1, samples)).astype(np.float32)

    frames = dsp.frames(batch)

    assert frames.shape == (2, dsp.frame_dim, expected_frames)
    assert frames.dtype == np.float32


@pytest.mark.parametrize("signal", [tone(440), noise(0.2), np.zeros(SECONDS.size, np.float32)],
                         ids=["tone", "noise", "silence"])
def test_features_are_finite_for_tones_noise_and_silence(dsp, signal):
    assert np.isfinite(dsp.frames(signal[None, None])).all()


def test_output_is_deterministic(dsp):
    batch = noise(0.3, seed=4)[None, None]

    np.testing.assert_array_equal(dsp.frames(batch), DspEmbedder().frames(batch.copy()))


def test_a_clip_gets_the_same_frames_alone_and_in_a_batch(dsp):
    together = dsp.frames(np.stack([tone(440), noise(0.9)])[:, None, :])

    np.testing.assert_array_equal(together[0], dsp.frames(tone(440)[None, None])[0])


def test_different_sounds_differ_and_loudness_barely_matters(dsp):
    a440, a440_quiet = embed(dsp, tone(440)), embed(dsp, tone(440, amplitude=0.125))  # 12 dB apart
    a880, hiss, hiss_quiet = embed(dsp, tone(880)), embed(dsp, noise(0.2)), embed(dsp, noise(0.05, seed=1))

    assert a440 @ a440_quiet > 0.97
    assert hiss @ hiss_quiet > 0.97
    assert a440 @ a880 < 0.7
    assert abs(a440 @ hiss) < 0.3 and abs(a880 @ hiss) < 0.3


@pytest.mark.parametrize(
    ("hz", "pitch_class"), [(440.0, PITCH_CLASS_A), (880.0, PITCH_CLASS_A), (261.63, PITCH_CLASS_C)]
)
def test_chroma_picks_up_the_pitch_class_of_a_tone(dsp, hz, pitch_class):
    chroma = dsp.frames(tone(hz)[None, None])[0, DspEmbedder.family_rows("chroma")]

    assert int(np.argmax(chroma.mean(axis=-1))) == pitch_class


def test_standardised_families_are_on_comparable_scales_for_music(dsp):
    frames = dsp.frames(piano_phrase()[None, None])[0]

    for family in FAMILIES:
        values = frames[DspEmbedder.family_rows(family.name)]
        rms = float(np.sqrt(np.mean(values**2)))
        assert 0.2 < rms < 5.0, f"{family.name} rms {rms:.2f}"


def test_log_mel_rows_are_relative_to_the_frame_level(dsp):
    frames = dsp.frames(noise(0.2)[None, None])[0]

    np.testing.assert_allclose(frames[DspEmbedder.family_rows("log_mel")].mean(axis=0), 0.0, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 2, 1000), (1000,), (1, 1, 0)])
def test_rejects_anything_but_mono_batches_with_samples(dsp, shape):
    with pytest.raises(ValueError, match="mono|sample"):
        dsp.frames(np.zeros(shape, dtype=np.float32))


def test_unknown_family_names_the_known_ones():
    with pytest.raises(KeyError, match="log_mel, mfcc, chroma, contrast, onset"):
        DspEmbedder.family_rows("tempo")
