"""The ``musiccaps`` source: the CSV parser on the published file's traps, the rows it makes, and the whole
ingest against the loopback mirror (Hub stand-in for the CSV, YouTube stand-in for the segments)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
from mirror import ALL_KINDS, Faults, MirrorServer
from published import musiccaps as published_musiccaps
from published._youtube import dominant_hz, timecode_hz

from downloaders import get_source
from downloaders.base import SourceContext, SourceError
from downloaders.formats import youtube_items
from downloaders.formats.musiccaps import FILE, HEADER, MusicCapsClip, parse_aspects, parse_musiccaps
from downloaders.formats.segments import Rejected, RowError
from downloaders.musiccaps import row_of
from downloaders.transports.youtube import segment_seconds
from flows import stages
from store.layout import DataRoot
from store.manifest import read_manifest
from store.settings import Settings
from store.status import FailureClass, read_status

SOURCE = get_source("musiccaps")
HEADER_LINE = ",".join(HEADER) + "\n"
CAPTION_WITH_BREAK = 'A playful children\'s song with a "bouncy" xylophone melody.\nIt sounds happy and carefree.'


def parse(text: str) -> list[MusicCapsClip | Rejected]:
    return list(parse_musiccaps(io.StringIO(text, newline="")))


@pytest.fixture(scope="module")
def published() -> published_musiccaps.PublishedMusicCaps:
    return published_musiccaps.build()


def test_parser_reads_the_published_layout(published):
    entries = parse(published.files[FILE].decode())
    clips = [entry for entry in entries if isinstance(entry, MusicCapsClip)]
    assert [(c.segment.ytid, c.segment.start_s, c.segment.end_s) for c in clips] == [
        (row["ytid"], row["start_s"], row["end_s"]) for row in published.good()
    ]
    first, second = clips[0], clips[1]
    assert first.segment.ytid.startswith("-")
    assert first.audioset_labels == ("/m/0140xf", "/m/02cjck", "/m/04rlf")
    assert second.audioset_labels == ("/m/04rlf",)
    assert second.aspects == ("children's music", "Happy", "xylophone  melody")
    assert second.caption == CAPTION_WITH_BREAK
    assert (first.author_id, first.is_balanced_subset, first.is_audioset_eval) == (0, False, True)
    assert (second.author_id, second.is_balanced_subset, second.is_audioset_eval) == (1, True, False)


def test_damaged_rows_are_rejected_with_their_line_and_the_rest_is_read(published):
    entries = parse(published.files[FILE].decode())
    rejected = [entry for entry in entries if isinstance(entry, Rejected)]
    assert [r.reason for r in rejected] == list(published_musiccaps.DAMAGED.values())
    aspect, ytid = rejected
    # Rows with line breaks in their captions come before: the line is where the row starts in the file.
    assert published.files[FILE].decode().splitlines()[aspect.line - 1].startswith("Qmcaps003_x,5,15,")
    assert (aspect.ytid, aspect.start_s) == ("Qmcaps003_x", 5.0)
    assert "#NAME?" in ytid.detail and ytid.ytid is None
    assert len(entries) == published_musiccaps.ROWS


@pytest.mark.parametrize("text, reason", [
    ("__import__('os').system('touch /tmp/pwned')", "not a list literal"),
    ("['unterminated", "not a list literal"),
    ("{'pop': 1}", "not a list of strings"),
    ("['pop', 3]", "not a list of strings"),
    ("'pop, rock'", "not a list of strings"),
])
def test_aspect_lists_are_literals_never_code(text, reason):
    with pytest.raises(RowError, match=reason) as caught:
        parse_aspects(text)
    assert caught.value.reason == "bad_aspect_list"


def test_aspect_list_with_quotes_of_both_kinds():
    assert parse_aspects("[\"children's song\", 'a \"lo-fi\" feel']") == ("children's song", 'a "lo-fi" feel')
    assert parse_aspects("[]") == ()


@pytest.mark.parametrize("row, reason", [
    ("abcdefghijk,30,40,/m/04rlf,['pop'],A caption.,1,False,True,extra", "bad_row"),
    ("abcdefghijk,30,40,/m/04rlf,['pop'],A caption.,1,False", "bad_row"),
    ("abcdefghij,30,40,/m/04rlf,['pop'],A caption.,1,False,True", "bad_ytid"),
    ("abcdefghijk,40,30,/m/04rlf,['pop'],A caption.,1,False,True", "bad_time"),
    ("abcdefghijk,-5,5,/m/04rlf,['pop'],A caption.,1,False,True", "bad_time"),
    ("abcdefghijk,thirty,40,/m/04rlf,['pop'],A caption.,1,False,True", "bad_time"),
    ("abcdefghijk,30,40,/m/04rlf,['pop'],A caption.,one,False,True", "bad_field"),
    ("abcdefghijk,30,40,/m/04rlf,['pop'],A caption.,1,maybe,True", "bad_field"),
])
def test_bad_rows_name_their_reason(row, reason):
    good = "Zbcdefghijk,0,10,/m/04rlf,['pop'],Fine.,1,False,False\n"
    entries = parse(HEADER_LINE + row + "\n" + good)
    assert isinstance(entries[0], Rejected) and entries[0].reason == reason and entries[0].line == 2
    assert isinstance(entries[1], MusicCapsClip) and entries[1].segment.ytid == "Zbcdefghijk"


def test_a_file_that_is_not_musiccaps_is_refused():
    with pytest.raises(SourceError, match="lacks aspect_list"):
        parse("ytid,start_s,end_s,audioset_positive_labels,caption,author_id,is_balanced_subset,is_audioset_eval\n")


def test_rows_carry_split_caption_tags_and_provenance(published):
    clips = [entry for entry in parse(published.files[FILE].decode()) if isinstance(entry, MusicCapsClip)]
    test_row, train_row = row_of(clips[0]), row_of(clips[1])
    assert test_row.item_id == "musiccaps:-mcaps000_x@0" and test_row.split == "test"
    assert train_row.item_id == "musiccaps:Qmcaps001_x@10" and train_row.split == "train"
    assert (train_row.source, train_row.start_s, train_row.end_s) == ("Qmcaps001_x", 10.0, 20.0)
    assert train_row.captions == (
        'A playful children\'s song with a "bouncy" xylophone melody. It sounds happy and carefree.',
    )
    assert train_row.tags == ("children's music", "happy", "xylophone melody")
    assert train_row.license == "CC-BY-SA-4.0"
    assert train_row.extra_fields == {
        "group": "Qmcaps001_x", "segment_downloaded": True, "audioset_labels": ["/m/04rlf"], "author_id": 1,
        "is_balanced_subset": True,
    }


def test_the_acquired_file_is_the_segment(tmp_path: Path, published):
    """Preprocessing must take the whole downloaded file, not seek ``start_s`` into a 10 s segment."""
    clip = next(entry for entry in parse(published.files[FILE].decode()) if isinstance(entry, MusicCapsClip))
    row = row_of(clip)
    root = DataRoot(tmp_path)
    assert SOURCE.clip_range(row) == (None, None)
    assert SOURCE.audio_path(row, root) == root.raw_dir("musiccaps") / "-mcaps000_x@0.webm"
    m4a = root.raw_dir("musiccaps") / "-mcaps000_x@0.m4a"
    m4a.parent.mkdir(parents=True)
    m4a.write_bytes(b"\0")
    assert SOURCE.audio_path(row, root) == m4a


@pytest.mark.parametrize("split, message", [("valid", "unknown split valid"), (",", r"unknown split \(none\)")])
def test_unknown_split_is_a_source_error(tmp_path: Path, split, message):
    ctx = SourceContext(DataRoot(tmp_path), Settings(), {"split": split})
    with pytest.raises(SourceError, match=message):
        SOURCE.catalog(ctx)


def test_rejections_are_recorded_once_and_cleared_when_fixed(tmp_path: Path):
    root = DataRoot(tmp_path)
    bad = Rejected(7, "Qmcaps003_x", 5.0, "bad_aspect_list", "aspect_list '[' is not a list literal")
    mangled = Rejected(13, None, None, "bad_ytid", "'#NAME?' is not a YouTube video id")
    youtube_items.record_rejections(root, "musiccaps", [bad, mangled], file_name=FILE, accepted=[])
    youtube_items.record_rejections(root, "musiccaps", [bad, mangled], file_name=FILE, accepted=[])
    directory = root.status_dir("catalog", "musiccaps")
    assert len(list(directory.glob("unit-*.parquet"))) == 1
    records = read_status(directory)
    assert records["musiccaps:Qmcaps003_x@5"].reason == "bad_aspect_list"
    assert records["musiccaps:Qmcaps003_x@5"].detail == f"{FILE} line 7: aspect_list '[' is not a list literal"
    assert records[f"musiccaps:{FILE}#13"].reason == "bad_ytid"
    youtube_items.record_rejections(root, "musiccaps", [mangled], file_name=FILE, accepted=["musiccaps:Qmcaps003_x@5"])
    assert read_status(directory)["musiccaps:Qmcaps003_x@5"].is_ok


# --- the source against the Hub and YouTube stand-ins -----------------------------------------------------


@pytest.fixture
def served(mirror: MirrorServer, mirror_settings: Settings, published) -> published_musiccaps.PublishedMusicCaps:
    published_musiccaps.register(mirror, published)
    return published


def _ingest(root: Path, **options: str) -> list[stages.StageSummary]:
    return stages.ingest("musiccaps", options, limit=20, root=str(root))


def _video_gets(mirror: MirrorServer) -> int:
    return sum(entry.path.startswith("/watch?v=") for entry in mirror.log)


def _transient_failures(root: DataRoot) -> list[str]:
    records = read_status(root.status_dir("acquire", "musiccaps")).values()
    return [r.item_id for r in records if r.failure_class == FailureClass.TRANSIENT]


def _item_id(row: dict) -> str:
    return f"musiccaps:{row['ytid']}@{row['start_s']}"


@pytest.mark.integration
def test_ingest_preprocess_verify_and_a_second_run_does_nothing(
    served, mirror: MirrorServer, mirror_settings: Settings, prefect_server: str
) -> None:
    root = DataRoot(mirror_settings.root)
    catalog, acquire = _ingest(root.path)
    assert [row.item_id for row in read_manifest(root.manifest("musiccaps"))] == [_item_id(r) for r in served.good(20)]
    assert (catalog.items, acquire.ok, acquire.failed) == (20, 18, 2)
    assert acquire.failures == {"video_private": 1, "video_removed": 1}
    acquired = read_status(root.status_dir("acquire", "musiccaps"))
    for index, (reason, _) in published_musiccaps.UNAVAILABLE.items():
        record = acquired[_item_id(served.rows[index])]
        assert (record.reason, record.failure_class) == (reason, FailureClass.PERMANENT)
    rejected = read_status(root.status_dir("catalog", "musiccaps"))
    assert {item_id: r.reason for item_id, r in rejected.items()} == {
        "musiccaps:Qmcaps003_x@5": "bad_aspect_list", f"musiccaps:{FILE}#13": "bad_ytid",
    }

    assert stages.preprocess("musiccaps", root=str(root.path)).ok == 18
    verify = stages.verify("musiccaps", [], root=str(root.path))
    assert "verdict ok" in verify.extra and verify.failed == 0
    for row in served.available(20):
        clip = root.clip_path("musiccaps", _item_id(row))
        samples, rate = sf.read(clip, dtype="float32", always_2d=True)
        assert (rate, samples.shape[1]) == (44_100, 2)
        assert len(samples) / rate == pytest.approx(10.0, abs=0.05)
        # the clip holds the video's seconds start..end: not cut twice, not cut from the wrong place
        first, last = dominant_hz(samples.T, rate, 0.2, 0.8), dominant_hz(samples.T, rate, 9.2, 9.8)
        assert first == pytest.approx(timecode_hz(row["start_s"]), abs=5)
        assert last == pytest.approx(timecode_hz(row["start_s"] + 9), abs=5)

    videos = _video_gets(mirror)
    again = _ingest(root.path)
    assert [summary.worked for summary in again] == [0, 0]
    assert again[1].skipped_permanent == 2
    assert _video_gets(mirror) == videos


@pytest.mark.integration
def test_a_transient_failure_is_retried_by_the_next_run(
    served, mirror: MirrorServer, mirror_settings: Settings, prefect_server: str
) -> None:
    root = str(mirror_settings.root)
    stages.catalog("musiccaps", {}, 4, root)
    mirror.faults = Faults(rate=1.0, kinds=("500",), paths=("/watch",))
    first = stages.acquire("musiccaps", {}, root=root)
    assert (first.worked, first.ok, first.failures) == (4, 0, {"network": 4})
    records = read_status(DataRoot(root).status_dir("acquire", "musiccaps"))
    assert {r.failure_class for r in records.values()} == {FailureClass.TRANSIENT}
    assert "HTTP Error 500" in next(iter(records.values())).detail

    mirror.faults = Faults()
    second = stages.acquire("musiccaps", {}, root=root)
    assert (second.done_before, second.worked, second.ok, second.failed) == (0, 4, 4, 0)


@pytest.mark.integration
def test_under_transient_faults_runs_complete_and_every_item_arrives_once(
    served, mirror: MirrorServer, mirror_settings: Settings, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 % of all requests fail (5xx, 429, bodies cut anywhere, stalls past the read timeout), the reads of
    the segments' own bytes included: within two runs every segment a clean run gets is there, whole."""
    monkeypatch.setenv("MUSICTEXT_HTTP_TIMEOUT_S", "0.5")
    root = DataRoot(mirror_settings.root)
    mirror.faults = Faults(rate=0.3, seed=5, kinds=ALL_KINDS, cut=None, stall_s=0.8)
    runs = []
    while len(runs) < 2 and (not runs or _transient_failures(root)):
        runs.append(_ingest(root.path))  # every run completes; what a fault left behind, the next one does
    assert mirror.faults.injected >= 30
    assert _transient_failures(root) == []
    ids = [row.item_id for row in read_manifest(root.manifest("musiccaps"))]
    assert ids == [_item_id(row) for row in served.good(20)]
    records = read_status(root.status_dir("acquire", "musiccaps"))
    assert sorted(item_id for item_id, r in records.items() if r.is_ok) == sorted(
        _item_id(row) for row in served.available(20))
    assert sum(run[1].ok for run in runs) == 18  # each segment downloaded once, by whichever run got it
    assert sorted(p.name for p in root.raw_dir("musiccaps").glob("*.webm")) == sorted(
        f"{_item_id(row).split(':')[1]}.webm" for row in served.available(20))
    for path in root.raw_dir("musiccaps").glob("*.webm"):
        assert segment_seconds(path) == pytest.approx(10.0, abs=0.05), path.name
    assert [p for p in root.path.rglob("*") if ".part" in p.name or p.name.endswith(".tmp")] == []


def _cut(path: Path, seconds: float) -> None:
    """Replace ``path`` by its first ``seconds`` (what a download that broke off would have left)."""
    cut = path.with_name("cut" + path.suffix)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(path), "-t", str(seconds),
                    "-c", "copy", str(cut)], check=True, capture_output=True, timeout=60)
    cut.replace(path)


def test_an_existing_segment_is_checked_before_it_counts_as_downloaded(
    served, mirror: MirrorServer, mirror_settings: Settings
) -> None:
    root = DataRoot(mirror_settings.root)
    ctx = SourceContext(root, mirror_settings, {})
    whole, short = (row_of(clip) for clip in parse(served.files[FILE].decode())[:2])
    assert [record.is_ok for record in youtube_items.acquire([whole, short], ctx)] == [True, True]
    _cut(SOURCE.audio_path(short, root), 4.0)
    mirror.log.clear()

    kept, fetched = youtube_items.acquire([whole, short], ctx)

    assert (kept.is_ok, kept.detail, fetched.is_ok, fetched.detail) == (True, "already downloaded", True, None)
    assert {entry.path for entry in mirror.log} == {f"/watch?v={short.source}", f"/media/{short.source}.webm"}
    assert segment_seconds(SOURCE.audio_path(short, root)) == pytest.approx(10.0, abs=0.05)


@pytest.mark.integration
def test_a_segment_shorter_than_its_row_is_stopped_at_preprocess_and_fetched_again(
    served, mirror: MirrorServer, mirror_settings: Settings, prefect_server: str
) -> None:
    """A short raw file already recorded as acquired (cut off by an older version, or damaged since) never
    becomes a clip: preprocess refuses it as transient and deletes it, and the next ingest downloads it."""
    root = DataRoot(mirror_settings.root)
    stages.ingest("musiccaps", {}, limit=3, root=str(root.path))
    short = read_manifest(root.manifest("musiccaps"))[1]
    _cut(SOURCE.audio_path(short, root), 7.0)

    first = stages.preprocess("musiccaps", root=str(root.path))

    assert (first.ok, first.failures) == (2, {"duration_mismatch": 1})
    record = read_status(root.status_dir("preprocess", "musiccaps"))[short.item_id]
    assert record.failure_class == FailureClass.TRANSIENT and "lasts 10.000 s" in record.detail
    assert not SOURCE.audio_path(short, root).exists() and not root.clip_path("musiccaps", short.item_id).exists()
    _, acquire = stages.ingest("musiccaps", {}, limit=3, root=str(root.path))
    assert (acquire.worked, acquire.ok) == (1, 1)
    assert stages.preprocess("musiccaps", root=str(root.path)).ok == 1
    assert "verdict ok" in stages.verify("musiccaps", [], root=str(root.path)).extra
