"""The ``synthetic`` source: deterministic specs, truthful captions, real FluidSynth renders, acquire."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pretty_midi
import pytest
import soundfile

from downloaders import get_source
from downloaders.base import SourceContext, SourceError
from downloaders.synthesis import captions as caption_words
from downloaders.synthesis.captions import captions, tags
from downloaders.synthesis.compose import WRITERS, compose, register_window
from downloaders.synthesis.drums import GROOVES
from downloaders.synthesis.instruments import INSTRUMENTS
from downloaders.synthesis.render import SAMPLE_RATE, RenderError, render, write_wav
from downloaders.synthesis.spec import GROOVES as GROOVE_NAMES
from downloaders.synthesis.spec import PATTERNS, Part, Spec, SpecError
from downloaders.synthesis.styles import STYLES, draw_spec
from downloaders.synthesis.theory import MELODY_SCALES, SCALES, pitch_class
from downloaders.synthetic import SOURCE, audio_path, split_of
from store.layout import DataRoot
from store.manifest import ManifestRow
from store.settings import Settings

SPECS = [draw_spec(seed, index) for seed in (0, 1) for index in range(250)]


def context(root: Path, limit: int | None = None, **options: object) -> SourceContext:
    return SourceContext(DataRoot(root), Settings(root=root), options, limit)


def make_spec(**changes: object) -> Spec:
    """A short, plainly played spec (no humanising) for renders whose content a test measures."""
    spec = Spec(
        style="electronic", tempo_bpm=124, tonic="E", mode="minor", beats_per_bar=4, dynamics="medium",
        register="middle", density="moderate", groove="four_on_floor", swing=False, humanize=False,
        chord_type="triad", melody_scale="diatonic", progression=(0, 5, 2, 6),
        parts=(Part("chords", 0, "block"), Part("bass", 33, "whole"), Part("melody", 73, "line")),
        reverb=30, duration_s=10.0, seed=7,
    )
    return replace(spec, **changes)


def mono_22k(audio: np.ndarray) -> np.ndarray:
    return librosa.resample(librosa.to_mono(audio.T), orig_sr=SAMPLE_RATE, target_sr=22_050)


# --- catalog -------------------------------------------------------------------------------------------


def test_catalog_is_deterministic_and_item_i_does_not_depend_on_the_limit(tmp_path: Path) -> None:
    five = list(SOURCE.catalog(context(tmp_path, 5)))
    ten = list(SOURCE.catalog(context(tmp_path, 10)))
    assert len(five) == 5 and len(ten) == 10
    assert ten[:5] == five
    assert list(SOURCE.catalog(context(tmp_path, 10))) == ten
    assert len({row.item_id for row in ten}) == 10


def test_different_seeds_give_different_items(tmp_path: Path) -> None:
    zero = list(SOURCE.catalog(context(tmp_path, 5, seed=0)))
    one = list(SOURCE.catalog(context(tmp_path, 5, seed="1")))
    assert all(a.extra != b.extra for a, b in zip(zero, one, strict=True))
    assert {row.item_id for row in zero}.isdisjoint(row.item_id for row in one)


def test_rows_carry_the_spec_and_the_manifest_fields(tmp_path: Path) -> None:
    rows = list(SOURCE.catalog(context(tmp_path, 20, seed=4)))
    for index, row in enumerate(rows):
        spec = draw_spec(4, index)
        extra = json.loads(row.extra)
        assert Spec.from_dict(extra["spec"]) == spec
        assert extra["soundfont"] == "TimGM6mb.sf2" and extra["sample_rate"] == SAMPLE_RATE
        assert row.item_id == f"synthetic:s4-{index:06d}"
        assert row.dataset == "synthetic" and row.source == f"synthetic://seed=4/index={index}"
        assert row.license == "CC0-1.0"
        assert (row.start_s, row.end_s) == (0.0, spec.duration_s)
        assert row.captions == captions(spec) and row.tags == tags(spec)
        assert 2 <= len(row.captions) <= 3 and len(set(row.captions)) == len(row.captions)


def test_splits_are_stable_hash_buckets_of_about_80_10_10() -> None:
    splits = [split_of(f"s0-{i:06d}") for i in range(3000)]
    shares = {name: splits.count(name) / len(splits) for name in ("train", "valid", "test")}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["valid"] - 0.1) < 0.02
    assert abs(shares["test"] - 0.1) < 0.02
    assert split_of("s0-000042") == splits[42]


def test_default_limit_and_option_errors(tmp_path: Path) -> None:
    assert len(list(SOURCE.catalog(context(tmp_path)))) == 200
    for bad in ("x", "1.5", -3):
        with pytest.raises(SourceError, match="seed"):
            list(SOURCE.catalog(context(tmp_path, 3, seed=bad)))
    with pytest.raises(SourceError, match="limit"):
        list(SOURCE.catalog(context(tmp_path, -1)))
    with pytest.raises(SourceError, match="unknown option"):
        SOURCE.check_options({"sede": 1})
    assert get_source("synthetic") is SOURCE


def test_clip_durations_span_10_to_30_seconds() -> None:
    durations = [spec.duration_s for spec in SPECS]
    assert all(10.0 <= d <= 30.0 for d in durations)
    assert min(durations) < 11 and max(durations) > 29


def test_every_style_is_drawn_and_everything_it_names_exists() -> None:
    assert {spec.style for spec in SPECS} == set(STYLES)
    assert set(WRITERS) == {p for patterns in PATTERNS.values() for p in patterns}
    assert set(GROOVES) == set(GROOVE_NAMES)
    used = {program for style in STYLES.values() for slot in style.slots for program in slot.programs}
    assert used == set(INSTRUMENTS)


# --- captions and tags --------------------------------------------------------------------------------


def spans(text: str, phrase: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, re.IGNORECASE)]


def mentions(text: str, words: object) -> set[str]:
    return {w for w in words if spans(text, w)}


def without_names(text: str, spec: Spec) -> str:
    """The caption with its instrument names cut out, so "warm pad" is not read as a mood."""
    for program in spec.programs:
        for name in sorted(INSTRUMENTS[program].names, key=len, reverse=True):
            text = re.sub(re.escape(name), "_", text, flags=re.IGNORECASE)
    return text


def other_classes(table: dict, own: object) -> set[str]:
    mine = set(table[own])
    return {w for key, words in table.items() if key != own for w in words} - mine


def check_caption(caption: str, spec: Spec) -> None:
    assert caption[0].isupper() and caption.endswith("."), caption
    for number, _ in re.findall(r"(\d+) (BPM|beats per minute)", caption):
        assert int(number) == spec.tempo_bpm, caption
    allowed_numbers = {str(spec.tempo_bpm)} | ({"3", "4"} if spec.beats_per_bar == 3 else set()) | {"8"}
    assert set(re.findall(r"\d+", caption)) <= allowed_numbers, caption
    for tonic, mode in re.findall(r"\b([A-G][#b]?) (major|minor)\b", caption):
        assert (tonic, mode) == (spec.tonic, spec.mode), caption
    assert ("minor" in caption) <= (spec.mode == "minor") and ("major" in caption) <= (spec.mode == "major"), caption

    # Instruments: a name of an instrument that does not play may only appear inside one that does
    # ("piano" inside "electric piano") or inside the style's own noun ("solo piano piece").
    style = STYLES[spec.style]
    allowed = [s for p in spec.programs for n in INSTRUMENTS[p].names for s in spans(caption, n)]
    allowed += [s for noun in style.nouns for s in spans(caption, noun)]
    for program, instrument in INSTRUMENTS.items():
        if program in spec.programs:
            continue
        for name in instrument.names:
            for start, end in spans(caption, name):
                assert any(a <= start and end <= b for a, b in allowed), (caption, name, spec.programs)

    text = without_names(caption, spec)
    if spec.groove is None:
        negated = text
        for phrase in caption_words.NO_DRUMS:
            negated = negated.replace(phrase, "")
        assert "drum" not in negated.lower(), caption
    else:
        assert not mentions(text, caption_words.NO_DRUMS), caption
    minor_moods = {w for (mode, _), words in caption_words.MOOD_WORDS.items() if mode == "minor" for w in words}
    major_moods = {w for (mode, _), words in caption_words.MOOD_WORDS.items() if mode == "major" for w in words}
    assert not mentions(text, major_moods if spec.mode == "minor" else minor_moods), caption
    tempo = caption_words.tempo_class(spec.tempo_bpm)
    assert not mentions(text, other_classes(caption_words.TEMPO_WORDS, tempo)), caption
    assert not mentions(text, other_classes(caption_words.DYNAMICS_WORDS, spec.dynamics)), caption
    assert not mentions(text, other_classes(caption_words.DENSITY_WORDS, spec.density)), caption
    assert not mentions(text, other_classes(caption_words.METER_WORDS, spec.beats_per_bar)), caption
    register_words = other_classes(caption_words.REGISTER_WORDS, spec.register) if spec.register else \
        {w for words in caption_words.REGISTER_WORDS.values() for w in words}
    assert not mentions(text, register_words), caption


def test_captions_are_true_to_the_spec() -> None:
    for spec in SPECS:
        for caption in captions(spec):
            check_caption(caption, spec)


def test_captions_name_the_facts_often_enough_to_learn_from() -> None:
    """Numbers and names are sometimes said and sometimes not: each fact shows up in a fair share."""
    bpm = key = instrument = 0
    for spec in SPECS:
        text = " ".join(captions(spec))
        bpm += str(spec.tempo_bpm) in text
        key += f"{spec.tonic} {spec.mode}" in text
        instrument += any(n in text for p in spec.programs for n in INSTRUMENTS[p].names)
    assert 0.3 < bpm / len(SPECS) < 0.95
    assert 0.3 < key / len(SPECS) < 0.95
    assert instrument / len(SPECS) > 0.6


def test_captions_are_deterministic_and_varied() -> None:
    assert [captions(s) for s in SPECS[:50]] == [captions(s) for s in SPECS[:50]]
    openings = {c.split()[0] for spec in SPECS for c in captions(spec)}
    assert len(openings) > 30


def test_tags_describe_the_spec() -> None:
    for spec in SPECS:
        found = tags(spec)
        assert all(t == t.lower() and t for t in found) and len(set(found)) == len(found)
        assert STYLES[spec.style].genre in found
        assert {INSTRUMENTS[p].tag for p in spec.programs} <= set(found)
        assert ("drums" in found) == (spec.groove is not None) and ("no drums" in found) == (spec.groove is None)
        assert f"{spec.mode} key" in found
        assert f"{caption_words.tempo_class(spec.tempo_bpm)} tempo" in found


# --- the spec ------------------------------------------------------------------------------------------


def test_spec_round_trips_through_json() -> None:
    for spec in SPECS[:50]:
        assert Spec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d.update(tempo_bpm="fast"), "tempo_bpm"),
    (lambda d: d.pop("tonic"), "lacks tonic"),
    (lambda d: d.update(colour="blue"), "unknown field"),
    (lambda d: d["parts"][0].update(program=200), "program"),
    (lambda d: d["parts"][0].update(pattern="polka"), "pattern"),
    (lambda d: d.update(parts="piano"), "parts"),
    (lambda d: d.update(duration_s=45.0), "duration_s"),
    (lambda d: d.update(tonic="H"), "tonic"),
    (lambda d: d.update(register=None), "register"),
])
def test_damaged_specs_are_rejected_with_the_field_named(damage, message: str) -> None:
    data = make_spec().to_dict()
    damage(data)
    with pytest.raises(SpecError, match=message):
        Spec.from_dict(data)


def test_a_spec_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(SpecError, match="not a JSON object"):
        Spec.from_dict(["tempo", 120])


# --- composition ---------------------------------------------------------------------------------------


def melody_notes(midi: pretty_midi.PrettyMIDI, spec: Spec) -> list[pretty_midi.Note]:
    program = spec.part("melody").program
    return next(i for i in midi.instruments if i.program == program and not i.is_drum).notes


def test_composition_follows_the_spec() -> None:
    for spec in SPECS[:60]:
        midi = compose(spec)
        times, tempi = midi.get_tempo_changes()
        assert list(tempi) == [pytest.approx(spec.tempo_bpm)]
        assert [i.program for i in midi.instruments if not i.is_drum] == list(spec.programs)
        assert any(i.is_drum for i in midi.instruments) == (spec.groove is not None)
        assert max(n.end for i in midi.instruments for n in i.notes) <= spec.duration_s
        melody = spec.part("melody")
        if melody is not None and [p.program for p in spec.parts].count(melody.program) == 1:
            low, high = register_window(INSTRUMENTS[melody.program], spec.register)
            scale = {(pitch_class(spec.tonic) + pc) % 12 for pc in MELODY_SCALES[(spec.melody_scale, spec.mode)]}
            notes = melody_notes(midi, spec)
            assert notes and all(low <= n.pitch <= high and n.pitch % 12 in scale for n in notes)


def test_density_and_dynamics_shape_the_notes() -> None:
    def per_beat(spec: Spec) -> float:
        return len(melody_notes(compose(spec), spec)) / (spec.duration_s * spec.tempo_bpm / 60)

    assert per_beat(make_spec(density="sparse")) < 0.8 < per_beat(make_spec(density="moderate")) < 1.8
    assert per_beat(make_spec(density="busy")) > 2.0

    def mean_velocity(spec: Spec) -> float:
        return float(np.mean([n.velocity for i in compose(spec).instruments for n in i.notes]))

    assert mean_velocity(make_spec(dynamics="soft")) + 40 < mean_velocity(make_spec(dynamics="loud"))


def test_composition_is_deterministic() -> None:
    spec = make_spec(humanize=True, swing=True)
    first, second = io.BytesIO(), io.BytesIO()
    compose(spec).write(first)
    compose(spec).write(second)
    assert first.getvalue() == second.getvalue()


# --- rendering -----------------------------------------------------------------------------------------


def test_render_is_exact_length_stereo_normalised_and_byte_identical(tmp_path: Path) -> None:
    spec = make_spec(duration_s=10.3)
    audio = render(compose(spec), spec.duration_s)
    assert audio.shape == (round(10.3 * SAMPLE_RATE), 2) and audio.dtype == np.float32
    assert 20 * np.log10(np.abs(audio).max()) == pytest.approx(-1.0, abs=0.01)
    assert not np.allclose(audio[:, 0], audio[:, 1])  # parts are panned apart
    first, second = tmp_path / "a.wav", tmp_path / "b.wav"
    write_wav(first, audio)
    write_wav(second, render(compose(spec), spec.duration_s))
    assert first.read_bytes() == second.read_bytes()
    info = soundfile.info(first)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SAMPLE_RATE, 2, len(audio), "PCM_16")


def test_render_reflects_drums_tempo_and_key() -> None:
    with_drums = mono_22k(render(compose(make_spec()), 10.0))
    without = mono_22k(render(compose(make_spec(groove=None)), 10.0))

    def percussive_share(y: np.ndarray) -> float:
        harmonic, percussive = librosa.decompose.hpss(np.abs(librosa.stft(y)) ** 2)
        return float(percussive.sum() / harmonic.sum())

    assert percussive_share(with_drums) > 3 * percussive_share(without)

    tempo = float(librosa.feature.tempo(y=with_drums, sr=22_050)[0])
    assert min(abs(tempo / (124 * f) - 1) for f in (0.5, 1, 2)) < 0.04, tempo

    chroma = librosa.feature.chroma_cqt(y=without, sr=22_050).sum(axis=1)
    tonic = pitch_class("E")
    in_key = chroma[[(tonic + pc) % 12 for pc in SCALES["minor"]]].sum() / chroma.sum()
    tritone_key = chroma[[(tonic + 6 + pc) % 12 for pc in SCALES["minor"]]].sum() / chroma.sum()
    assert in_key > 0.7 and in_key > tritone_key + 0.25


SLOW_FIRST_RAND = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>
static int calls;
int rand(void) {
    static int (*real)(void);
    if (!real) real = (int (*)(void))dlsym(RTLD_NEXT, "rand");
    if (calls++ == 0) usleep(300000);
    return real();
}
"""
"""A ``rand`` whose first call sleeps: FluidSynth's first ``new_fluid_synth`` draws its dither table with
``rand`` before it sets the default modulators, so the sleep holds open the window a loaded machine opens
by chance, in which a synth made by another thread copies the modulators half-set."""

TWO_THREADS_RENDER_FIRST = """
import sys, threading, numpy as np
from downloaders.synthesis.compose import compose
from downloaders.synthesis.render import render
from downloaders.synthesis.spec import Spec
spec = Spec.from_dict(__import__("json").loads(sys.argv[1]))
midi, out = compose(spec), {}
threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, render(midi, spec.duration_s))) for i in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
np.save(sys.argv[2], np.stack([out[0], out[1]]))
"""


def test_the_first_renders_of_a_process_match_when_threads_race(tmp_path: Path) -> None:
    """Before: the second thread's render ignored velocity and volume (a CI run's first WAV came out different)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "the tests need a C compiler (make test installs gcc) to slow FluidSynth's start-up"
    (tmp_path / "slow_rand.c").write_text(SLOW_FIRST_RAND)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", tmp_path / "slow_rand.so", tmp_path / "slow_rand.c", "-ldl"],
                   check=True)
    spec = make_spec(duration_s=10.0)
    env = {**os.environ, "LD_PRELOAD": str(tmp_path / "slow_rand.so")}
    result = subprocess.run([sys.executable, "-c", TWO_THREADS_RENDER_FIRST, json.dumps(spec.to_dict()),
                             tmp_path / "renders.npy"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fluid_synth_add_default_mod" not in result.stderr
    reference = render(compose(spec), spec.duration_s)
    for audio in np.load(tmp_path / "renders.npy"):
        np.testing.assert_array_equal(audio, reference)


def test_silent_midi_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="silent"):
        render(pretty_midi.PrettyMIDI(), 10.0)


# --- acquire ---------------------------------------------------------------------------------------------


def damaged(row: ManifestRow, extra: str) -> ManifestRow:
    return replace(row, extra=extra)


def test_acquire_renders_records_failures_and_skips_what_exists(tmp_path: Path) -> None:
    ctx = context(tmp_path, 4, seed=2)
    rows = list(SOURCE.catalog(ctx))
    spec_json = json.loads(rows[2].extra)
    spec_json["spec"]["tempo_bpm"] = "fast"
    batch = [rows[0], damaged(rows[1], "{not json"), damaged(rows[2], json.dumps(spec_json)), rows[3]]

    records = list(SOURCE.acquire(batch, ctx))
    assert [r.item_id for r in records] == [r.item_id for r in batch]
    assert [r.outcome for r in records] == ["ok", "failed", "failed", "ok"]
    assert {r.reason for r in records[1:3]} == {"invalid_spec"}
    assert "not valid JSON" in records[1].detail and "tempo_bpm" in records[2].detail
    assert all(r.is_permanent_failure for r in records[1:3])
    for row, record in ((rows[0], records[0]), (rows[3], records[3])):
        wav = audio_path(row, ctx.root)
        assert record.output == str(wav.relative_to(tmp_path)) == f"raw/synthetic/{wav.name}"
        assert wav.with_suffix(".mid").exists()
        audio, rate = soundfile.read(wav)
        assert rate == SAMPLE_RATE and audio.shape == (round(row.end_s * SAMPLE_RATE), 2)
        assert np.abs(audio).max() > 0.5
    assert not audio_path(rows[1], ctx.root).exists() and not audio_path(rows[2], ctx.root).exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]

    before = audio_path(rows[0], ctx.root).stat().st_mtime_ns
    again = list(SOURCE.acquire([rows[0], rows[3]], ctx))
    assert [(r.outcome, r.detail) for r in again] == [("ok", "already rendered")] * 2
    assert audio_path(rows[0], ctx.root).stat().st_mtime_ns == before


def test_acquire_stops_before_rendering_when_the_renderer_is_missing(tmp_path: Path, monkeypatch) -> None:
    def missing() -> None:
        raise RenderError("the General MIDI soundfont is missing; reinstall pretty_midi")

    monkeypatch.setattr("downloaders.synthetic.check_renderer", missing)
    ctx = context(tmp_path, 1)
    with pytest.raises(SourceError, match="soundfont is missing"):
        list(SOURCE.acquire(list(SOURCE.catalog(ctx)), ctx))


def test_audio_path_is_under_the_raw_dir_by_item_key(tmp_path: Path) -> None:
    row = next(iter(SOURCE.catalog(context(tmp_path, 1, seed=3))))
    assert audio_path(row, DataRoot(tmp_path)) == DataRoot(tmp_path).raw_dir("synthetic") / "s3-000000.wav"
