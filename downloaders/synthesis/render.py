"""MIDI to audio with FluidSynth and the General MIDI soundfont that ships inside pretty_midi.

One stereo synth renders the whole piece, driven event by event, so parts keep their pan and share the
reverb. Samples are taken as 32-bit floats (``fluid_synth_write_float``) rather than pyfluidsynth's 16-bit
``get_samples``, whose dither comes from the C library's ``rand()`` state: floats keep the render
byte-identical for a given MIDI and leave the one rounding to 16 bits for after normalisation.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path
from types import ModuleType

import numpy as np
import pretty_midi
import soundfile

SOUNDFONT = "TimGM6mb.sf2"
SAMPLE_RATE = 44_100
PEAK_DBFS = -1.0
FADE_S = 0.5
SILENT_PEAK = 1e-4
DRUM_CHANNEL = 9
MIDI_CHANNELS = 16
_SYNTH_SETTINGS = {"synth.reverb.active": 1, "synth.chorus.active": 1, "synth.cpu-cores": 1}
"""Reverb and chorus on, as the MIDI's CC 91/93 ask; one thread, so voices are always summed in one order."""


class RenderError(RuntimeError):
    """The MIDI could not be made into usable audio; the message says why and what to do."""


def soundfont_path() -> Path:
    path = Path(pretty_midi.__file__).with_name(SOUNDFONT)
    if not path.is_file():
        raise RenderError(f"the General MIDI soundfont {path} is missing; reinstall pretty_midi "
                          "(pip install --force-reinstall pretty_midi), which ships it")
    return path


_LOAD_LOCK = threading.Lock()


def _fluidsynth() -> tuple[ModuleType, object]:
    """pyfluidsynth and its float writer, loaded once and lazily: a missing library fails a render, not an import."""
    with _LOAD_LOCK:
        return _load_fluidsynth()


@functools.cache
def _load_fluidsynth() -> tuple[ModuleType, object]:
    try:
        import fluidsynth
    except ImportError as exc:
        raise RenderError(f"FluidSynth is not usable ({exc}); install the FluidSynth library "
                          "(e.g. apt-get install fluidsynth) and pyfluidsynth") from None
    write_float = fluidsynth.cfunc(
        "fluid_synth_write_float", ctypes.c_int,
        ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
        ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
        ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1),
    )
    if write_float is None:
        raise RenderError("this FluidSynth lacks fluid_synth_write_float; install FluidSynth 2 or newer")
    # The first new_fluid_synth of a process fills the library's global tables and default modulators, and
    # a synth another thread makes meanwhile copies them half-filled: its notes ignore velocity, volume and
    # pan, so the same MIDI renders differently. Making that first synth here, under the lock, closes the race.
    fluidsynth.Synth().delete()
    return fluidsynth, write_float


def check_renderer() -> None:
    """Fail early, once, when the machine cannot render at all (no soundfont or no FluidSynth library)."""
    soundfont_path()
    _fluidsynth()


def _channels(midi: pretty_midi.PrettyMIDI) -> list[int]:
    """MIDI channels as a General MIDI player assigns them: drums on channel 10, the rest in order."""
    melodic = iter(c for c in range(MIDI_CHANNELS) if c != DRUM_CHANNEL)
    channels = []
    for instrument in midi.instruments:
        channel = DRUM_CHANNEL if instrument.is_drum else next(melodic, None)
        if channel is None:
            raise RenderError(f"the MIDI has more than {MIDI_CHANNELS - 1} melodic instruments; "
                              "merge parts that share a program")
        channels.append(channel)
    return channels


Event = tuple[int, int, tuple]


def _events(midi: pretty_midi.PrettyMIDI, channels: list[int], sample_rate: int) -> list[Event]:
    """(sample, order, action) for every controller, bend and note; at one instant controllers
    come first and note-offs before note-ons, so a repeated note is released before it sounds again."""
    events: list[Event] = []
    for instrument, channel in zip(midi.instruments, channels, strict=True):
        for cc in instrument.control_changes:
            events.append((round(cc.time * sample_rate), 0, ("cc", channel, cc.number, cc.value)))
        for bend in instrument.pitch_bends:
            events.append((round(bend.time * sample_rate), 1, ("bend", channel, bend.pitch)))
        for note in instrument.notes:
            events.append((round(note.end * sample_rate), 2, ("off", channel, note.pitch)))
            events.append((round(note.start * sample_rate), 3, ("on", channel, note.pitch, note.velocity)))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def _synthesize(midi: pretty_midi.PrettyMIDI, frames: int, sample_rate: int) -> np.ndarray:
    fluidsynth, write_float = _fluidsynth()
    channels = _channels(midi)
    synth = fluidsynth.Synth(samplerate=float(sample_rate), **_SYNTH_SETTINGS)
    try:
        sfid = synth.sfload(str(soundfont_path()))
        if sfid < 0:
            raise RenderError(f"FluidSynth could not load the soundfont {soundfont_path()}")
        for instrument, channel in zip(midi.instruments, channels, strict=True):
            synth.program_select(channel, sfid, 128 if instrument.is_drum else 0, instrument.program)
        out = np.zeros((frames, 2), dtype=np.float32)
        base = out.ctypes.data

        def advance(start: int, stop: int) -> None:
            if stop > start and write_float(synth.synth, stop - start, base, 2 * start, 2, base, 2 * start + 1, 2):
                raise RenderError(f"FluidSynth failed to synthesise samples {start}-{stop}")

        done = 0
        for sample, _, action in _events(midi, channels, sample_rate):
            sample = min(sample, frames)
            advance(done, sample)
            done = max(done, sample)
            kind, channel, *args = action
            if kind == "cc":
                synth.cc(channel, *args)
            elif kind == "bend":
                synth.pitch_bend(channel, *args)
            elif kind == "off":
                synth.noteoff(channel, *args)
            else:
                synth.noteon(channel, *args)
        advance(done, frames)
        return out
    finally:
        synth.delete()


def _finish(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Fade the cut-off ending and bring the peak to ``PEAK_DBFS``; silence is an error, not a clip."""
    fade = min(len(audio), round(FADE_S * sample_rate))
    audio[len(audio) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak < SILENT_PEAK:
        raise RenderError(f"the render is silent (peak {peak:.1e}); the MIDI has no audible notes")
    return audio * np.float32(10 ** (PEAK_DBFS / 20) / peak)


def render(midi: pretty_midi.PrettyMIDI, duration_s: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Stereo float32 audio of exactly ``duration_s`` seconds (frames × 2), peak at ``PEAK_DBFS``."""
    frames = round(duration_s * sample_rate)
    return _finish(_synthesize(midi, frames, sample_rate), sample_rate)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV; the format is named because atomic temp paths do not end in ``.wav``."""
    soundfile.write(path, audio, sample_rate, subtype="PCM_16", format="WAV")
