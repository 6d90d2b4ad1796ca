"""Clips of downloaded segments (the acquired file is the row's whole span): one whose length is not the
row's span never becomes a clip; the file is deleted as an incomplete download, so acquire fetches it again
(transient), while a complete segment that is merely short stays a permanent ``too_short``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from processors.clip import WHOLE_FILE, segment_length, write_clip
from processors.errors import AudioError
from store.manifest import ManifestRow
from store.settings import Settings
from store.status import FailureClass
from verification.audio import DURATION_TOLERANCE_S

RATE = 44_100
SETTINGS = Settings(min_clip_s=1.0)


def _row(start_s: float | None, end_s: float | None) -> ManifestRow:
    return ManifestRow(item_id="musiccaps:abcdefghijk@30", dataset="musiccaps", source="abcdefghijk",
                       start_s=start_s, end_s=end_s)


def _wav(path: Path, seconds: float) -> Path:
    t = np.arange(round(seconds * RATE)) / RATE
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE, subtype="PCM_16")
    return path


def test_only_a_whole_file_with_a_span_is_a_segment() -> None:
    assert segment_length(_row(30.0, 40.0), WHOLE_FILE, 0.05).seconds == 10.0
    assert segment_length(_row(30.0, 40.0), (30.0, 40.0), 0.05) is None  # a window of a longer file
    assert segment_length(_row(None, None), WHOLE_FILE, 0.05) is None  # a whole track


def test_a_segment_of_its_rows_length_becomes_a_clip(tmp_path: Path) -> None:
    source = _wav(tmp_path / "seg.wav", 10.02)
    info = write_clip(source, tmp_path / "clip.flac", start_s=None, end_s=None, settings=SETTINGS,
                      segment=segment_length(_row(30.0, 40.0), WHOLE_FILE, DURATION_TOLERANCE_S))
    assert info.duration_s == pytest.approx(10.02, abs=0.001) and source.exists()


@pytest.mark.parametrize("damage", ["short", "truncated", "empty", "garbage"])
def test_a_segment_of_another_length_is_deleted_and_refused_as_transient(tmp_path: Path, damage: str) -> None:
    source = _wav(tmp_path / "seg.wav", 0.0 if damage == "empty" else 7.0 if damage == "short" else 10.0)
    if damage == "truncated":  # the header still promises 10 s: a copy that broke off
        source.write_bytes(source.read_bytes()[: 44 + 2 * RATE * 6])
    if damage == "garbage":
        source.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    target = tmp_path / "clip.flac"

    with pytest.raises(AudioError) as refused:
        write_clip(source, target, start_s=None, end_s=None, settings=SETTINGS,
                   segment=segment_length(_row(30.0, 40.0), WHOLE_FILE, DURATION_TOLERANCE_S))

    assert (refused.value.reason, refused.value.failure_class) == ("duration_mismatch", FailureClass.TRANSIENT)
    assert "lasts 10.000 s" in refused.value.detail and "next acquire run downloads it again" in refused.value.detail
    assert not source.exists() and not target.exists() and list(tmp_path.iterdir()) == []


def test_a_whole_segment_shorter_than_the_minimum_stays_a_permanent_too_short(tmp_path: Path) -> None:
    source = _wav(tmp_path / "seg.wav", 0.5)
    with pytest.raises(AudioError) as refused:
        write_clip(source, tmp_path / "clip.flac", start_s=None, end_s=None, settings=SETTINGS,
                   segment=segment_length(_row(30.0, 30.5), WHOLE_FILE, DURATION_TOLERANCE_S))
    assert (refused.value.reason, refused.value.failure_class) == ("too_short", FailureClass.PERMANENT)
    assert source.exists()
