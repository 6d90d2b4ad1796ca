"""Decoding, channel folding, resampling, clip writing and text cleaning, on real files in real formats."""

from __future__ import annotations

import errno
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_files import (
    TONE_HZ,
    encode_with_ffmpeg,
    stereo,
    stereo_tone,
    tone,
    write_bad_files,
    write_good_files,
)

from processors.channels import at_most_stereo, to_channels
from processors.clip import check_audio, windows, write_clip
from processors.decode import Audio, decode, probe_duration
from processors.errors import AudioError
from processors.resample import resample
from processors.text import clean_caption, clean_captions, clean_tags
from store.settings import Settings
from store.status import FailureClass, Outcome

GOOD = ["wav_stereo", "flac_chord", "ogg_vorbis", "mp3", "wav_8bit", "wav_96k", "wav_6ch", "wav_mono_8k",
        "long_wav", "m4a_aac", "webm_opus"]
BAD = ["corrupt", "empty", "truncated", "silent", "nan", "too_short"]
SETTINGS = Settings(sample_rate=44_100, min_clip_s=1.0, silence_dbfs=-60.0)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory):
    return write_good_files(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory):
    return write_bad_files(tmp_path_factory.mktemp("bad"))


def dominant_hz(signal: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * sample_rate / len(signal))


def read_clip(path: Path) -> tuple[np.ndarray, sf._SoundFileInfo]:
    return sf.read(path, always_2d=True, dtype="float32")[0], sf.info(path)


def test_every_fixture_is_tested(good, bad):
    assert sorted(good) == sorted(GOOD)
    assert sorted(bad) == sorted(BAD)


@pytest.mark.parametrize("name", GOOD)
def test_good_file_becomes_canonical_clip(good, name, tmp_path):
    fixture = good[name]
    target = tmp_path / "clip.flac"

    info = write_clip(fixture.path, target, start_s=None, end_s=None, settings=SETTINGS)

    samples, header = read_clip(target)
    assert (header.format, header.subtype, header.samplerate) == ("FLAC", "PCM_16", 44_100)
    assert header.channels == info.channels == fixture.channels
    assert header.duration == pytest.approx(fixture.duration_s, abs=0.02)
    assert info.duration_s == pytest.approx(header.duration, abs=1e-6)
    assert dominant_hz(samples[:, 0], 44_100) == pytest.approx(fixture.tone_hz, abs=2)
    assert info.peak_dbfs == pytest.approx(fixture.peak_dbfs, abs=0.5)
    assert 20 * math.log10(np.abs(samples).max()) == pytest.approx(info.peak_dbfs, abs=0.01)
    assert abs(float(samples.mean())) < 0.005, "a DC offset means integer PCM was mis-scaled"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.flac"]


def test_source_sample_rate_is_reported(good, tmp_path):
    info = write_clip(good["wav_96k"].path, tmp_path / "c.flac", start_s=None, end_s=None, settings=SETTINGS)
    assert info.source_sample_rate == 96_000


def test_six_channels_fold_to_itu_stereo_without_lfe(good, tmp_path):
    target = tmp_path / "surround.flac"
    write_clip(good["wav_6ch"].path, target, start_s=None, end_s=None, settings=SETTINGS)
    samples, _ = read_clip(target)

    assert dominant_hz(samples[:, 0], 44_100) == pytest.approx(440, abs=2)
    assert dominant_hz(samples[:, 1], 44_100) == pytest.approx(660, abs=2)
    spectrum = np.abs(np.fft.rfft(samples[:, 0]))
    bin_hz = 44_100 / len(samples)
    assert spectrum[round(55 / bin_hz)] < 0.01 * spectrum.max(), "the LFE channel must be dropped"


def two_tone_frames(sample_rate: int) -> np.ndarray:
    """440 Hz for 1.5 s then 880 Hz for 1.5 s, stereo frames-first."""
    signal = np.concatenate([tone(440, 1.5, sample_rate), tone(880, 1.5, sample_rate)])
    return stereo(signal, signal)


@pytest.fixture(scope="module")
def two_tone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("two_tone")
    files = {"wav": folder / "two.wav", "mp3": folder / "two.mp3", "m4a": folder / "two.m4a"}
    sf.write(files["wav"], two_tone_frames(48_000), 48_000, subtype="PCM_16")
    sf.write(files["mp3"], two_tone_frames(44_100), 44_100)
    encode_with_ffmpeg(two_tone_frames(44_100), 44_100, files["m4a"], ["-c:a", "aac", "-b:a", "160k"])
    return files


@pytest.mark.parametrize("kind", ["wav", "mp3", "m4a"])
@pytest.mark.parametrize(("start", "end", "expected_hz"), [(0, 1.4, 440), (1.6, 3.0, 880), (1.6, None, 880)])
def test_clip_range_gives_right_duration_and_content(two_tone, kind, start, end, expected_hz, tmp_path):
    target = tmp_path / "part.flac"
    info = write_clip(two_tone[kind], target, start_s=start, end_s=end, settings=SETTINGS)

    samples, header = read_clip(target)
    assert header.duration == pytest.approx((end or 3.0) - start, abs=0.03)
    assert info.duration_s == pytest.approx(header.duration, abs=1e-6)
    assert dominant_hz(samples[:, 0], 44_100) == pytest.approx(expected_hz, abs=3)


def test_range_past_the_end_is_clamped(good):
    audio = decode(good["wav_stereo"].path, 2.0, 10.0)
    assert audio.duration_s == pytest.approx(1.0)


@pytest.mark.parametrize(("start", "end"), [(3.5, None), (5.0, 8.0), (-1.0, 1.0), (2.0, 1.0), (1.0, 1.0)])
def test_impossible_range_is_out_of_range(good, start, end):
    with pytest.raises(AudioError) as caught:
        decode(good["wav_stereo"].path, start, end)
    assert caught.value.reason == "out_of_range"
    assert str(good["wav_stereo"].path) in caught.value.detail


@pytest.mark.parametrize("name", BAD)
def test_bad_file_is_rejected_with_reason_and_leaves_nothing(bad, name, tmp_path):
    fixture = bad[name]
    clips = tmp_path / "clips"

    with pytest.raises(AudioError) as caught:
        write_clip(fixture.path, clips / "clip.flac", start_s=None, end_s=None, settings=SETTINGS)

    error = caught.value
    assert error.reason == fixture.reason
    assert str(fixture.path) in error.detail
    assert error.failure_class == FailureClass.PERMANENT
    assert not clips.exists() or list(clips.iterdir()) == []


def test_error_becomes_a_failed_status_record(bad):
    with pytest.raises(AudioError) as caught:
        decode(bad["empty"].path)
    record = caught.value.record("local:empty.wav", "preprocess")
    assert (record.item_id, record.stage, record.outcome) == ("local:empty.wav", "preprocess", Outcome.FAILED)
    assert (record.reason, record.failure_class) == ("empty", FailureClass.PERMANENT)
    assert record.detail == caught.value.detail


def test_missing_file(tmp_path):
    with pytest.raises(AudioError) as caught:
        write_clip(tmp_path / "gone.wav", tmp_path / "c.flac", start_s=None, end_s=None, settings=SETTINGS)
    assert caught.value.reason == "missing_file"
    assert caught.value.failure_class == FailureClass.PERMANENT


def test_missing_ffmpeg_is_transient(good, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AudioError) as caught:
        write_clip(good["m4a_aac"].path, tmp_path / "c.flac", start_s=None, end_s=None, settings=SETTINGS)
    assert caught.value.reason == "ffmpeg_missing"
    assert caught.value.failure_class == FailureClass.TRANSIENT
    assert "install ffmpeg" in caught.value.detail
    assert not (tmp_path / "c.flac").exists()


def test_io_error_is_transient(good, monkeypatch):
    def failing_open(self, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "open", failing_open)
    with pytest.raises(AudioError) as caught:
        decode(good["wav_stereo"].path)
    assert caught.value.reason == "io_error"
    assert caught.value.failure_class == FailureClass.TRANSIENT


def test_failed_write_leaves_no_partial_clip(good, tmp_path, monkeypatch):
    def disk_full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sf.SoundFile, "write", disk_full)
    with pytest.raises(AudioError) as caught:
        write_clip(good["wav_stereo"].path, tmp_path / "c.flac", start_s=None, end_s=None, settings=SETTINGS)
    assert caught.value.reason == "write_failed"
    assert caught.value.failure_class == FailureClass.TRANSIENT
    assert list(tmp_path.iterdir()) == []


def test_truncated_wav_keeps_the_part_before_the_cut(bad):
    path = bad["truncated"].path
    assert decode(path, 0.0, 1.5).duration_s == pytest.approx(1.5)
    with pytest.raises(AudioError) as caught:
        decode(path, 1.0, 3.0)
    assert caught.value.reason == "truncated"
    assert "4.00 s" in caught.value.detail


@pytest.mark.parametrize("suffix", ["flac", "mp3"])
def test_truncated_compressed_file_is_detected(suffix, tmp_path):
    path = tmp_path / f"cut.{suffix}"
    sf.write(path, stereo_tone(4, 44_100), 44_100)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioError) as caught:
        decode(path)
    assert caught.value.reason == "truncated"


def test_streaming_wav_header_is_not_truncation(tmp_path):
    """ffmpeg writing WAV to a pipe leaves 0xFFFFFFFF sizes in the header: unknown, not a claim."""
    argv = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
            "-f", "wav", "pipe:1"]
    path = tmp_path / "piped.wav"
    path.write_bytes(subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout)
    assert probe_duration(path) == pytest.approx(2.0)
    assert decode(path).duration_s == pytest.approx(2.0)


def test_probe_duration(good, bad):
    assert probe_duration(good["wav_stereo"].path) == pytest.approx(3.0)
    assert probe_duration(good["m4a_aac"].path) == pytest.approx(2.0, abs=0.03)
    assert probe_duration(bad["truncated"].path) == pytest.approx(4.0), "what the header promises"
    for name, reason in [("corrupt", "undecodable"), ("empty", "empty")]:
        with pytest.raises(AudioError) as caught:
            probe_duration(bad[name].path)
        assert caught.value.reason == reason


def test_check_audio_names_the_range(tmp_path):
    silent = Audio(np.zeros((2, 44_100), dtype=np.float32), 44_100)
    with pytest.raises(AudioError) as caught:
        check_audio(silent, tmp_path / "a.wav", min_s=1.0, silence_dbfs=-60, where=" between 30 s and 60 s")
    assert caught.value.reason == "silent"
    assert "between 30 s and 60 s" in caught.value.detail
    quiet = Audio(np.full((1, 44_100), 0.01, dtype=np.float32), 44_100)
    check_audio(quiet, tmp_path / "a.wav", min_s=1.0, silence_dbfs=-60)


@pytest.mark.parametrize(
    ("duration", "clip", "hop", "min_s", "expected"),
    [
        (20.0, 30.0, 30.0, 1.0, [(0.0, 20.0)]),
        (0.5, 30.0, 30.0, 1.0, []),
        (0.0, 30.0, 30.0, 0.0, []),
        (60.0, 30.0, 30.0, 1.0, [(0.0, 30.0), (30.0, 60.0)]),
        (65.0, 30.0, 30.0, 1.0, [(0.0, 30.0), (30.0, 60.0), (60.0, 65.0)]),
        (60.5, 30.0, 30.0, 1.0, [(0.0, 30.0), (30.0, 60.0)]),
        (50.0, 30.0, 10.0, 1.0, [(0.0, 30.0), (10.0, 40.0), (20.0, 50.0)]),
        (45.0, 10.0, 20.0, 1.0, [(0.0, 10.0), (20.0, 30.0), (40.0, 45.0)]),
        (1.0, 0.5, 0.3, 0.1, [(0.0, 0.5), (0.3, 0.8), (0.6, 1.0)]),
    ],
)
def test_windows(duration, clip, hop, min_s, expected):
    assert windows(duration, clip, hop, min_s) == expected


def test_windows_with_hop_below_clip_never_repeat_the_tail():
    result = windows(100.0, 30.0, 10.0, 1.0)
    assert result[-1] == (70.0, 100.0)
    assert len(result) == 8


@pytest.mark.parametrize(("clip", "hop"), [(0.0, 10.0), (10.0, 0.0), (-1.0, 1.0)])
def test_windows_reject_non_positive_sizes(clip, hop):
    with pytest.raises(ValueError):
        windows(60.0, clip, hop, 1.0)


def test_channel_conversion():
    left, right = np.full(4, 0.2, dtype=np.float32), np.full(4, 0.6, dtype=np.float32)
    pair = np.stack([left, right])
    assert np.allclose(to_channels(pair, 1), 0.4)
    assert to_channels(pair[:1], 2).shape == (2, 4)
    assert np.allclose(to_channels(pair[:1], 2), 0.2)
    assert to_channels(pair, 2) is pair
    five = np.stack([np.full(4, value, dtype=np.float32) for value in (0.1, 0.2, 0.3, 0.4, 0.5)])
    assert at_most_stereo(five).shape == (1, 4)
    assert np.allclose(at_most_stereo(five), 0.3)
    full_scale = np.ones((6, 4), dtype=np.float32)
    assert np.abs(at_most_stereo(full_scale)).max() <= 1.0, "the 5.1 downmix must not clip"
    with pytest.raises(ValueError):
        to_channels(pair, 3)


def test_resample_keeps_pitch_and_duration():
    audio = Audio(tone(440, 2, 8_000)[None, :], 8_000)
    converted = resample(audio, 44_100)
    assert converted.sample_rate == 44_100
    assert converted.samples.dtype == np.float32
    assert converted.frames == 88_200
    assert dominant_hz(converted.samples[0], 44_100) == pytest.approx(TONE_HZ, abs=1)
    assert resample(converted, 44_100) is converted


def test_clean_captions_and_tags():
    assert clean_caption("  A calm\npiano\t piece \u00a0 ") == "A calm piano piece"
    captions = ["Loud  drums", None, "", "   ", "Loud drums\n", "Soft bells"]
    assert clean_captions(captions) == ("Loud drums", "Soft bells")
    assert clean_tags([" Rock", "rock", "HIP  hop", "", None, "jazz "]) == ("rock", "hip hop", "jazz")
