"""Whole tracks (as Navidrome embeds them): the settings that ask for them, the spans a source catalogues,
and preprocessing a long track block by block in bounded memory with the same result as in one piece."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_files import encode_with_ffmpeg, stereo_tone, tone

from downloaders import get_source
from downloaders.base import SourceContext
from processors import decode as decode_module
from processors.channels import at_most_stereo
from processors.clip import BLOCK_S, WHOLE_FILE, catalog_spans, windows, write_clip
from processors.decode import Audio, decode
from processors.errors import AudioError
from processors.resample import resample
from store.layout import DataRoot, make_item_id
from store.settings import Settings, load_settings
from store.status import FailureClass

LOCAL = get_source("local")
WINDOWED = Settings(clip_s=2.0, clip_hop_s=2.0, min_clip_s=0.5)
RATE = 48_000
"""Source rate of the long test tracks: not the canonical 44.1 kHz, so every block goes through soxr."""


def music_like(seconds: float, rate: int = RATE, seed: int = 1, offset_s: float = 0.0) -> np.ndarray:
    """Stereo float32 ``[frames, 2]``: a chord with a slow swell and a little noise, peaking near -6 dBFS."""
    t = offset_s + np.arange(round(seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * hz * t) / k for k, hz in enumerate((220.0, 277.2, 329.6), start=1))
    swell = 0.75 + 0.25 * np.sin(2 * np.pi * t / 7.0)
    noise = 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    left = 0.27 * chord * swell + noise
    return np.stack([left, 0.8 * left[::-1]], axis=1).astype(np.float32)


def write_long_flac(path: Path, seconds: int, rate: int = RATE) -> Path:
    """A long 16-bit stereo FLAC written 30 s at a time, so the test itself never holds the whole track."""
    with sf.SoundFile(path, "w", rate, 2, format="FLAC", subtype="PCM_16") as flac:
        for start in range(0, seconds, 30):
            flac.write(music_like(min(30, seconds - start), rate, seed=start, offset_s=start))
    return path


def clip_frames(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32", always_2d=True)[0]


# Settings and spans --------------------------------------------------------------------------------------


def test_whole_tracks_are_asked_for_by_clip_s_zero_or_by_dataset(tmp_path, monkeypatch):
    assert not Settings().wants_whole_tracks("local")
    assert Settings(clip_s=0).wants_whole_tracks("fma")
    chosen = Settings(whole_tracks=["local"])
    assert chosen.wants_whole_tracks("local") and not chosen.wants_whole_tracks("fma")
    with pytest.raises(ValueError):
        Settings(clip_s=-1)

    monkeypatch.setenv("MUSICTEXT_CONFIG", os.devnull)
    monkeypatch.setenv("MUSICTEXT_WHOLE_TRACKS", '["local", "mtg_jamendo"]')
    assert load_settings().whole_tracks == ["local", "mtg_jamendo"]
    monkeypatch.delenv("MUSICTEXT_WHOLE_TRACKS")
    config = tmp_path / "musictext.toml"
    config.write_text('whole_tracks = ["fma"]\n')
    monkeypatch.setenv("MUSICTEXT_CONFIG", str(config))
    assert load_settings().wants_whole_tracks("fma")


@pytest.mark.parametrize("settings", [Settings(clip_s=0), Settings(whole_tracks=["local"])])
@pytest.mark.parametrize("duration", [None, 0.5, 20.0, 95.0, 3600.0])
def test_whole_tracks_are_one_span_whatever_the_duration(settings, duration):
    assert catalog_spans("local", duration, settings) == [WHOLE_FILE]
    assert catalog_spans("local", duration, settings, whole_if_short=True) == [WHOLE_FILE]


def test_windowed_spans_are_what_each_source_catalogued_before():
    settings = Settings()
    assert catalog_spans("mtg_jamendo", 95.0, settings) == windows(95.0, 30.0, 30.0, 1.0)
    assert catalog_spans("mtg_jamendo", 20.0, settings) == [(0.0, 20.0)], "a short track is still one window"
    assert catalog_spans("local", 20.0, settings, whole_if_short=True) == [WHOLE_FILE]
    assert catalog_spans("local", 30.0, settings, whole_if_short=True) == [WHOLE_FILE]
    assert catalog_spans("local", 45.0, settings, whole_if_short=True) == [(0.0, 30.0), (30.0, 45.0)]
    assert catalog_spans("fma", None, settings) == [WHOLE_FILE], "unknown duration: preprocess says why"
    assert catalog_spans("fma", 0.4, settings) == [WHOLE_FILE], "no window is long enough"
    assert catalog_spans("fma", 95.0, Settings(whole_tracks=["local"])) == windows(95.0, 30.0, 30.0, 1.0)


# The local source ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A long and a short recording and a file whose duration cannot be read."""
    music = tmp_path_factory.mktemp("music")
    sf.write(music / "long.wav", stereo_tone(5, 44_100), 44_100, subtype="PCM_16")
    (music / "sub").mkdir()
    sf.write(music / "sub" / "short.flac", tone(440, 1.5, 44_100), 44_100)
    (music / "broken.mp3").write_bytes(b"not audio at all" * 100)
    return music


def local_rows(folder: Path, tmp_path: Path, settings: Settings) -> list[tuple[str, float | None, float | None]]:
    ctx = SourceContext(DataRoot(tmp_path / "data"), settings, {"path": str(folder)})
    return [(row.item_id, row.start_s, row.end_s) for row in LOCAL.catalog(ctx)]


@pytest.mark.parametrize("settings", [
    Settings(clip_s=0),
    Settings(clip_s=2.0, clip_hop_s=2.0, min_clip_s=0.5, whole_tracks=["local"]),
])
def test_local_whole_tracks_are_one_row_per_file_without_a_start(folder, tmp_path, settings):
    assert local_rows(folder, tmp_path, settings) == [
        ("local:broken.mp3", None, None),
        ("local:long.wav", None, None),
        ("local:sub/short.flac", None, None),
    ]


def test_local_windows_keep_their_ids_by_default(folder, tmp_path):
    assert local_rows(folder, tmp_path, WINDOWED) == [
        ("local:broken.mp3", None, None),
        ("local:long.wav@0", 0.0, 2.0),
        ("local:long.wav@2", 2.0, 4.0),
        ("local:long.wav@4", 4.0, 5.0),
        ("local:sub/short.flac", None, None),
    ]
    assert local_rows(folder, tmp_path, Settings(whole_tracks=["fma"])) == [
        ("local:broken.mp3", None, None), ("local:long.wav", None, None), ("local:sub/short.flac", None, None),
    ], "with the default 30 s clips every file here is short: one row each, as before"


def test_a_whole_long_track_becomes_one_clip_of_its_whole_duration(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    seconds = 4 * BLOCK_S + 7
    sf.write(music / "mix.flac", music_like(seconds), RATE, subtype="PCM_16")
    ctx = SourceContext(DataRoot(tmp_path / "data"), Settings(whole_tracks=["local"]), {"path": str(music)})
    (row,) = LOCAL.catalog(ctx)
    assert (row.item_id, row.start_s, row.end_s) == (make_item_id("local", "mix.flac"), None, None)

    target = ctx.root.clip_path("local", row.item_id)
    info = write_clip(LOCAL.audio_path(row, ctx.root), target, start_s=row.start_s, end_s=row.end_s,
                      settings=ctx.settings)

    header = sf.info(target)
    assert (header.format, header.subtype, header.samplerate, header.channels) == ("FLAC", "PCM_16", 44_100, 2)
    assert abs(header.frames - round(seconds * 44_100)) <= 1
    assert info.duration_s == pytest.approx(seconds, abs=1 / 44_100)
    assert (info.channels, info.source_sample_rate) == (2, RATE)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


# Streaming preprocess -----------------------------------------------------------------------------------


def one_shot_clip(source: Path, target: Path) -> np.ndarray:
    """What ``write_clip`` wrote before it streamed: decode all, fold, resample in one call, clip, 16-bit."""
    audio = decode(source)
    canonical = resample(Audio(at_most_stereo(audio.samples), audio.sample_rate), 44_100)
    sf.write(target, np.clip(canonical.samples, -1.0, 1.0).T, 44_100, format="FLAC", subtype="PCM_16")
    return clip_frames(target)


@pytest.mark.parametrize("suffix", ["flac", "webm"])
def test_streamed_clip_equals_the_one_shot_clip(suffix, tmp_path):
    """soxr's stream carries its state over block edges: no clicks, no drift, the same frame count."""
    source = tmp_path / f"track.{suffix}"
    frames = music_like(2 * BLOCK_S + 13)
    if suffix == "webm":
        encode_with_ffmpeg(frames, RATE, source, ["-c:a", "libopus", "-b:a", "160k"])
    else:
        sf.write(source, frames, RATE, subtype="PCM_24")

    write_clip(source, tmp_path / "streamed.flac", start_s=None, end_s=None, settings=Settings())

    streamed, reference = clip_frames(tmp_path / "streamed.flac"), one_shot_clip(source, tmp_path / "ref.flac")
    assert abs(len(streamed) - len(reference)) <= 1
    common = min(len(streamed), len(reference))
    assert np.abs(streamed[:common] - reference[:common]).max() <= 1e-4


def test_a_ten_minute_track_needs_memory_for_a_few_blocks_not_for_the_track(tmp_path):
    seconds = 600
    source = write_long_flac(tmp_path / "ten-minutes.flac", seconds)
    decoded_bytes = seconds * RATE * 2 * np.dtype(np.float32).itemsize

    tracemalloc.start()
    try:
        info = write_clip(source, tmp_path / "clips" / "c.flac", start_s=None, end_s=None, settings=Settings())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert info.duration_s == pytest.approx(seconds, abs=1e-3)
    assert peak < 0.25 * decoded_bytes, f"peak {peak / 2**20:.1f} MiB for a {decoded_bytes / 2**20:.0f} MiB track"


def test_a_truncated_long_track_is_rejected_after_streaming_and_leaves_nothing(tmp_path):
    source = write_long_flac(tmp_path / "cut.flac", 3 * round(BLOCK_S))
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    clips = tmp_path / "clips"

    with pytest.raises(AudioError) as caught:
        write_clip(source, clips / "c.flac", start_s=None, end_s=None, settings=Settings())

    assert caught.value.reason == "truncated"
    assert "90.00 s" in caught.value.detail
    assert list(clips.iterdir()) == [], "blocks were written to a temporary file, which is gone"


def test_non_finite_samples_in_a_late_block_reject_the_track(tmp_path):
    frames = music_like(2 * BLOCK_S + 5)
    frames[round((BLOCK_S + 10) * RATE), 1] = np.inf
    source = tmp_path / "late.wav"
    sf.write(source, frames, RATE, subtype="FLOAT")
    with pytest.raises(AudioError) as caught:
        write_clip(source, tmp_path / "clips" / "c.flac", start_s=None, end_s=None, settings=Settings())
    assert caught.value.reason == "non_finite"
    assert list((tmp_path / "clips").iterdir()) == []


def test_silence_is_judged_on_the_peak_of_every_block(tmp_path):
    quiet_then_loud = np.zeros((round((2 * BLOCK_S + 5) * RATE), 2), dtype=np.float32)
    quiet_then_loud[-RATE:] = music_like(1)
    sf.write(tmp_path / "late.flac", quiet_then_loud, RATE, subtype="PCM_16")
    info = write_clip(tmp_path / "late.flac", tmp_path / "ok.flac", start_s=None, end_s=None, settings=Settings())
    assert info.peak_dbfs > -10

    sf.write(tmp_path / "silent.flac", np.zeros_like(quiet_then_loud), RATE, subtype="PCM_16")
    with pytest.raises(AudioError) as caught:
        write_clip(tmp_path / "silent.flac", tmp_path / "no.flac", start_s=None, end_s=None, settings=Settings())
    assert caught.value.reason == "silent"


def fake_ffmpeg(tmp_path: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``ffmpeg`` on PATH that runs ``script`` (the real ffprobe still reads the header)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "ffmpeg").write_text(f"#!/bin/sh\n{script}\n")
    (tools / "ffmpeg").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture(scope="module")
def m4a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("m4a") / "track.m4a"
    encode_with_ffmpeg(stereo_tone(2, 44_100), 44_100, path, ["-c:a", "aac", "-b:a", "128k"])
    return path


def test_a_stuck_ffmpeg_is_killed_and_retried_next_run(m4a, tmp_path, monkeypatch):
    fake_ffmpeg(tmp_path, "exec sleep 60", monkeypatch)
    monkeypatch.setattr(decode_module, "FFMPEG_TIMEOUT_S", 0.5)
    with pytest.raises(AudioError) as caught:
        write_clip(m4a, tmp_path / "clips" / "c.flac", start_s=None, end_s=None, settings=Settings())
    assert (caught.value.reason, caught.value.failure_class) == ("decode_timeout", FailureClass.TRANSIENT)
    assert list((tmp_path / "clips").iterdir()) == []


def test_a_failing_ffmpeg_says_why(m4a, tmp_path, monkeypatch):
    fake_ffmpeg(tmp_path, "echo 'Invalid data found when processing input' >&2; exit 1", monkeypatch)
    with pytest.raises(AudioError) as caught:
        write_clip(m4a, tmp_path / "clips" / "c.flac", start_s=None, end_s=None, settings=Settings())
    assert caught.value.reason == "undecodable"
    assert "Invalid data found" in caught.value.detail
