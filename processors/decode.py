"""Decode an audio file, or one time range of it, to float32 samples ``[channels, frames]``.

soundfile (libsndfile) reads WAV, FLAC, OGG, MP3 and AIFF in-process and seeks by frame; whatever it
refuses (m4a/aac, webm, opus in Matroska, wma, ...) goes to the ``ffmpeg`` CLI, which seeks with
``-ss``/``-t`` and writes float32 PCM to a pipe. Integer PCM of any width comes out scaled to [-1, 1].

A range that runs past the end of the file is clamped to the end (metadata often rounds end times up);
a range that starts at or after the end is ``out_of_range``. A file is ``truncated`` when decoding
stops short of what its header promises for the requested range (libsndfile reports WAV/AIFF headers
that claim more data than the file holds; FLAC and MP3 decoders stop early). Such a file is rejected
rather than clipped, because it is a broken copy (an interrupted download or copy) whose fix is a
complete copy, and a caption written for the whole recording would not describe what is left.

:func:`open_audio` hands the range out in blocks (libsndfile reads on from its seek point; ffmpeg's pipe is
read a block at a time), so a whole track never has to sit in memory; truncation is then known only after
the last block, which is why a consumer writes its output to a temporary name until the stream has ended.
:func:`decode` is the same stream gathered into one array, for ranges short enough to hold.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from processors.errors import AudioError
from store.status import FailureClass

FFMPEG_TIMEOUT_S = 300.0
"""Longest ffprobe may run, or ffmpeg may take to deliver one block; a stuck decoder is a transient
``decode_timeout``."""

_READ_BLOCK = 1 << 16
_SF_ERR_SYSTEM = 2
_HEADER_CLAIM = re.compile(r"^(?:data|SSND) : (\d+) \(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZE = 0xFFFFFFFF
"""The size a streaming WAV writer (e.g. ffmpeg to a pipe) leaves in the header: unknown, not a claim."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray
    """float32 ``[channels, frames]``."""
    sample_rate: int

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def frames(self) -> int:
        return self.samples.shape[1]

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class _Header:
    """What a file's header promises, before any audio is decoded."""

    sample_rate: int
    channels: int
    duration_s: float | None
    """``None`` when the container does not say."""


@dataclass(frozen=True)
class _Range:
    """A range of one file, clamped to what its header promises."""

    path: Path
    header: _Header
    start: float
    end: float | None
    """``None`` when the header does not state the duration and the range runs to the end."""


@dataclass(frozen=True)
class AudioStream:
    """One range of an open audio file, decoded block by block so that a whole track never sits in memory."""

    sample_rate: int
    channels: int
    blocks: Generator[np.ndarray, None, None]
    """float32 ``[frames, channels]`` blocks in order. Raises ``AudioError`` (``truncated``) after the last
    block when the file stops short of what its header promised."""


class _Refused(Exception):
    """soundfile cannot read this container; ffmpeg may."""


def probe_duration(path: Path) -> float:
    """The duration the header states, in seconds, without decoding audio."""
    header = _probe(path)
    if header.duration_s is None:
        raise AudioError(
            "unknown_duration",
            f"{path} does not state its duration in its header; it can only be decoded whole.",
        )
    return header.duration_s


def decode(path: Path, start_s: float | None = None, end_s: float | None = None) -> Audio:
    """Samples of ``[start_s, end_s]`` (the whole file when both are ``None``), all in memory at once; a
    whole track is better read through :func:`open_audio`."""
    with open_audio(path, start_s, end_s) as stream:
        blocks = [block.T for block in stream.blocks]
    channels_first = np.concatenate([np.empty((stream.channels, 0), dtype=np.float32), *blocks], axis=1)
    return Audio(channels_first, stream.sample_rate)


@contextlib.contextmanager
def open_audio(
    path: Path, start_s: float | None = None, end_s: float | None = None, *, block_s: float | None = None
) -> Iterator[AudioStream]:
    """``[start_s, end_s]`` of ``path`` (the whole file when both are ``None``) as blocks of ``block_s``
    seconds (one block when ``None``), so a caller can process a track of any length in bounded memory.

    Problems the header shows (missing file, out-of-range start, unreadable container) raise here, before
    any audio is decoded; the file and any ffmpeg process are closed when the ``with`` block ends.
    """
    _check_range(path, start_s, end_s)
    _check_file(path)
    with contextlib.ExitStack() as resources:
        try:
            handle = resources.enter_context(_open_soundfile(path))
        except _Refused as refused:
            stream = _ffmpeg_stream(path, start_s, end_s, block_s, refusal=str(refused))
        else:
            stream = _soundfile_stream(path, handle, start_s, end_s, block_s)
        resources.callback(stream.blocks.close)
        yield stream


def _probe(path: Path) -> _Header:
    _check_file(path)
    try:
        with _open_soundfile(path) as handle:
            return _soundfile_header(handle)
    except _Refused as refused:
        return _ffprobe_header(path, refusal=str(refused))


def _check_range(path: Path, start_s: float | None, end_s: float | None) -> None:
    start = start_s or 0.0
    if start < 0 or (end_s is not None and end_s <= start):
        raise AudioError(
            "out_of_range",
            f"{path}: the clip range {start_s}–{end_s} s is not a forward range from 0 s or later; "
            "fix the start/end times in the metadata.",
        )


def _check_file(path: Path) -> None:
    """Fail early, with the right class, on files that are missing, unreadable or empty."""
    try:
        with path.open("rb") as handle:
            first_byte = handle.read(1)
    except OSError as error:
        raise AudioError.from_os_error(path, error) from None
    if not first_byte:
        raise AudioError("empty", f"{path} is empty (0 bytes); replace it with a complete copy.")


def _open_soundfile(path: Path) -> sf.SoundFile:
    try:
        return sf.SoundFile(path)
    except sf.LibsndfileError as error:
        if error.code == _SF_ERR_SYSTEM:
            raise AudioError.from_os_error(path, OSError(errno.EIO, error.error_string)) from None
        raise _Refused(error.error_string) from None


def _soundfile_header(handle: sf.SoundFile) -> _Header:
    return _Header(handle.samplerate, handle.channels, _promised_frames(handle) / handle.samplerate)


def _promised_frames(handle: sf.SoundFile) -> int:
    """Frames the header claims (libsndfile counts only what a short WAV/AIFF holds, and logs the claim)."""
    claim = _HEADER_CLAIM.search(handle.extra_info)
    if claim is None:
        return handle.frames
    claimed, present = int(claim[1]), int(claim[2])
    if claimed == _STREAMING_SIZE or present <= 0:
        return handle.frames
    return round(handle.frames * claimed / present)


def _clamp_range(path: Path, header: _Header, start_s: float | None, end_s: float | None) -> _Range:
    """The range with its end clamped to the stated duration; ``end`` is ``None`` when unknown."""
    start = start_s or 0.0
    if header.duration_s is None:
        return _Range(path, header, start, end_s)
    if header.duration_s == 0:
        raise AudioError("empty", f"{path} holds no audio samples; replace it with a complete copy.")
    if start >= header.duration_s:
        raise AudioError(
            "out_of_range",
            f"{path}: the clip starts at {start:g} s but the file is {header.duration_s:.2f} s long; "
            "fix the start/end times in the metadata.",
        )
    end = header.duration_s if end_s is None else min(end_s, header.duration_s)
    return _Range(path, header, start, end)


def _block_frames(block_s: float | None, sample_rate: int) -> int | None:
    return None if block_s is None else max(1, round(block_s * sample_rate))


def _soundfile_stream(
    path: Path, handle: sf.SoundFile, start_s: float | None, end_s: float | None, block_s: float | None
) -> AudioStream:
    header = _soundfile_header(handle)
    span = _clamp_range(path, header, start_s, end_s)
    blocks = _soundfile_blocks(handle, span, _block_frames(block_s, header.sample_rate))
    return AudioStream(header.sample_rate, header.channels, blocks)


def _soundfile_blocks(
    handle: sf.SoundFile, span: _Range, block_frames: int | None
) -> Generator[np.ndarray, None, None]:
    first = round(span.start * handle.samplerate)
    last = min(round(span.end * handle.samplerate), handle.frames)
    wanted = max(last - first, 0)
    decoded, problem = 0, _seek(handle, first) if wanted else None
    while decoded < wanted and problem is None:
        block, problem = _read_block(handle, min(block_frames or wanted, wanted - decoded))
        if not len(block):
            break
        decoded += len(block)
        yield block
    _check_complete(span, decoded / handle.samplerate, problem)


def _seek(handle: sf.SoundFile, frame: int) -> str | None:
    """The library's message if the seek failed (a damaged file), else ``None``."""
    try:
        handle.seek(frame)
    except sf.LibsndfileError as error:
        return error.error_string
    return None


def _read_block(handle: sf.SoundFile, frames: int) -> tuple[np.ndarray, str | None]:
    """Up to ``frames`` frames (fewer at the end of the file) and, if decoding failed part-way, the library's
    message. Reading in small steps keeps what was decoded before an error, so the failure can say where
    it happened."""
    out = np.empty((frames, handle.channels), dtype=np.float32)
    position = 0
    try:
        while position < frames:
            got = handle.read(out=out[position:position + _READ_BLOCK], dtype="float32")
            if len(got) == 0:
                break
            position += len(got)
    except sf.LibsndfileError as error:
        return out[:position], error.error_string
    return out[:position], None


def _check_complete(span: _Range, decoded_s: float, problem: str | None) -> None:
    """Reject audio that stops short of what the header promised for this range (see module docstring)."""
    if span.end is None:
        return
    expected = span.end - span.start
    if decoded_s >= expected - (0.1 + 0.01 * expected):
        return
    stopped = span.start + decoded_s
    because = f" ({problem})" if problem else ""
    raise AudioError(
        "truncated",
        f"{span.path} is truncated: its header promises {span.header.duration_s:.2f} s but decoding stopped at "
        f"{stopped:.2f} s{because}. It was probably cut short while downloading or copying; "
        "replace it with a complete copy.",
    )


def _ffmpeg_stream(
    path: Path, start_s: float | None, end_s: float | None, block_s: float | None, *, refusal: str
) -> AudioStream:
    header = _ffprobe_header(path, refusal=refusal)
    span = _clamp_range(path, header, start_s, end_s)
    blocks = _ffmpeg_blocks(span, _block_frames(block_s, header.sample_rate))
    return AudioStream(header.sample_rate, header.channels, blocks)


def _ffmpeg_blocks(span: _Range, block_frames: int | None) -> Generator[np.ndarray, None, None]:
    """float32 frames from ffmpeg's pipe, ``block_frames`` at a time (everything in one read when ``None``)."""
    header = span.header
    seek = ["-ss", f"{span.start:.6f}"] if span.start > 0 else []
    limit = ["-t", f"{span.end - span.start:.6f}"] if span.end is not None else []
    argv = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *seek, *limit, "-i", _ffmpeg_input(span.path),
        "-map", "0:a:0", "-ac", str(header.channels), "-ar", str(header.sample_rate), "-f", "f32le", "pipe:1",
    ]
    frame_bytes = 4 * header.channels
    read_size = -1 if block_frames is None else block_frames * frame_bytes
    decoded = 0
    with _streamed_tool(argv, span.path) as (chunks, stderr):
        for chunk in chunks(read_size):
            samples = np.frombuffer(chunk, dtype="<f4", count=len(chunk) // frame_bytes * header.channels)
            decoded += len(samples) // header.channels
            yield samples.reshape(-1, header.channels)
        said = _last_line(stderr(), span.path)
    _check_complete(span, decoded / header.sample_rate, said)


def _ffprobe_header(path: Path, *, refusal: str) -> _Header:
    argv = [
        "ffprobe", "-hide_banner", "-loglevel", "error", "-select_streams", "a:0",
        "-show_entries", "stream=channels,sample_rate,duration:format=duration",
        "-of", "json", _ffmpeg_input(path),
    ]
    info = json.loads(_run_tool(argv, path, refusal=refusal).stdout or b"{}")
    streams = info.get("streams") or []
    if not streams or not streams[0].get("channels"):
        raise AudioError(
            "undecodable",
            f"{path} has no audio stream (libsndfile: {refusal}); check that it is an audio file.",
        )
    stream = streams[0]
    duration = stream.get("duration") or info.get("format", {}).get("duration")
    return _Header(int(stream["sample_rate"]), int(stream["channels"]), float(duration) if duration else None)


def _ffmpeg_input(path: Path) -> str:
    """An input argument ffmpeg cannot mistake for an option or a protocol (names like ``-x`` or ``a:b``)."""
    return f"file:{path.resolve()}"


def _run_tool(
    argv: list[str], path: Path, *, refusal: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    _require_tool(argv[0], path)
    try:
        result = subprocess.run(argv, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise _timeout(argv[0], path) from None
    if result.returncode != 0:
        raise _tool_failed(argv[0], path, result.stderr, refusal)
    return result


@contextlib.contextmanager
def _streamed_tool(
    argv: list[str], path: Path
) -> Iterator[tuple[Callable[[int], Iterator[bytes]], Callable[[], bytes]]]:
    """Run ``argv`` with its output read on demand: yields ``chunks(size)``, the output ``size`` bytes at a
    time (all at once for -1), and ``stderr()``, what the tool has said so far.

    A read that waits longer than ``FFMPEG_TIMEOUT_S`` kills the tool (a stuck decoder); a tool that fails
    raises once its output is exhausted; leaving the block early kills the tool, so nothing lingers.
    """
    _require_tool(argv[0], path)
    with tempfile.TemporaryFile() as errors, subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
    ) as process:

        def stderr() -> bytes:
            errors.seek(0)
            return errors.read()

        def chunks(size: int) -> Iterator[bytes]:
            while chunk := _read_or_kill(process, size, argv[0], path):
                yield chunk
            if process.wait() != 0:
                raise _tool_failed(argv[0], path, stderr(), None)

        try:
            yield chunks, stderr
        finally:
            process.kill()


def _read_or_kill(process: subprocess.Popen[bytes], size: int, tool: str, path: Path) -> bytes:
    """One read of ``process``'s output; a process that gives nothing for ``FFMPEG_TIMEOUT_S`` is killed."""
    assert process.stdout is not None
    stuck = threading.Event()

    def give_up() -> None:
        stuck.set()
        process.kill()

    watchdog = threading.Timer(FFMPEG_TIMEOUT_S, give_up)
    watchdog.start()
    try:
        chunk = process.stdout.read(size)
    finally:
        watchdog.cancel()
    if stuck.is_set():
        raise _timeout(tool, path)
    return chunk


def _require_tool(tool: str, path: Path) -> None:
    if shutil.which(tool) is None:
        raise AudioError(
            "ffmpeg_missing",
            f"{path} needs ffmpeg to decode (libsndfile cannot read it), but `{tool}` is not on PATH; "
            "install ffmpeg (e.g. `apt install ffmpeg`) and re-run.",
            failure_class=FailureClass.TRANSIENT,
        )


def _timeout(tool: str, path: Path) -> AudioError:
    return AudioError(
        "decode_timeout",
        f"{tool} took longer than {FFMPEG_TIMEOUT_S:g} s on {path}; retried next run.",
        failure_class=FailureClass.TRANSIENT,
    )


def _tool_failed(tool: str, path: Path, stderr: bytes, refusal: str | None) -> AudioError:
    also = f"; libsndfile: {refusal}" if refusal else ""
    message = _last_line(stderr, path) or "no message"
    return AudioError(
        "undecodable",
        f"{path} could not be decoded ({tool}: {message}{also}); it is damaged or not audio.",
    )


def _last_line(stderr: bytes, path: Path) -> str | None:
    """ffmpeg's last message, without the input name it repeats (the detail names the file already)."""
    lines = stderr.decode("utf-8", errors="replace").strip().splitlines()
    return lines[-1].strip().removeprefix(f"{_ffmpeg_input(path)}: ") if lines else None
