"""The ``audioset`` source: the segment-CSV, class-list and ontology parsers on the published files' traps,
the music subset (a DAG walk, labels not propagated), the rows, and the whole ingest against the mirror."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
from mirror import ALL_KINDS, Faults, MirrorServer
from published import audioset as published_audioset
from published._youtube import dominant_hz, timecode_hz, timecode_webm

from downloaders import get_source
from downloaders.audioset import SPLIT_FILES
from downloaders.base import SourceContext, SourceError
from downloaders.formats import youtube_items
from downloaders.formats.audioset import (
    CLASS_FILE,
    MUSIC,
    LabelledSegment,
    OntologyNode,
    caption,
    descendants,
    parse_segments,
    read_class_names,
    read_ontology,
)
from downloaders.formats.segments import Rejected
from downloaders.transports.youtube import segment_seconds
from flows import stages
from store.layout import DataRoot, make_item_id
from store.manifest import read_manifest
from store.settings import Settings, load_settings
from store.status import FailureClass, read_status

SOURCE = get_source("audioset")
BALANCED = SPLIT_FILES["balanced"]


@pytest.fixture(scope="module")
def published() -> published_audioset.PublishedAudioSet:
    return published_audioset.build()


@pytest.fixture(scope="module")
def ontology(published, tmp_path_factory) -> dict[str, OntologyNode]:
    path = tmp_path_factory.mktemp("ontology") / "ontology.json"
    path.write_bytes(published.ontology)
    return read_ontology(path)


def segments(text: str, keep=None) -> list[LabelledSegment | Rejected]:
    return list(parse_segments(io.StringIO(text), name="test.csv", keep=keep))


def node(mid: str, *children: str) -> OntologyNode:
    return OntologyNode(mid, mid.upper(), children, ())


def test_segment_csv_comment_lines_separator_and_quoted_labels(published):
    entries = segments(published.csv_files[BALANCED].decode())
    first = entries[0]
    assert isinstance(first, LabelledSegment) and first.line == 4
    assert (first.segment.ytid, first.segment.start_s, first.segment.end_s) == ("-setb000_yt", 30.0, 40.0)
    assert first.labels == ("/m/04rlf", "/m/0342h", "/m/06by7", "/m/02hnl")
    short = next(e for e in entries if isinstance(e, LabelledSegment) and e.segment.ytid == "Asetb002_yt")
    assert (short.segment.start_s, short.segment.end_s) == (10.0, 16.5)
    mangled = [e for e in entries if isinstance(e, Rejected)]
    assert [(r.line, r.reason) for r in mangled] == [(8, "bad_ytid")]
    assert len(entries) == published_audioset.SIZES["balanced"]


def test_spreadsheet_resaved_copies_are_read():
    text = 'YTID,start_seconds,end_seconds,positive_labels\n-0Gj8-vB1q4,30.000,40.000,"/m/04rlf,/m/0342h",,\n'
    (entry,) = segments(text)
    assert entry.segment.ytid == "-0Gj8-vB1q4" and entry.labels == ("/m/04rlf", "/m/0342h")


@pytest.mark.parametrize("row, reason", [
    ('abcdefghijk, 30.000, 40.000', "bad_row"),
    ('abcdefghijk, 30.000, 40.000, "/m/04rlf", 7', "bad_row"),
    ('abcdefghijk, 30.000, 40.000, ""', "no_labels"),
    ('abcdefghijk, 40.000, 30.000, "/m/04rlf"', "bad_time"),
    ('abcdefghijk, nan, 30.000, "/m/04rlf"', "bad_time"),
])
def test_bad_segment_rows(row, reason):
    (entry, good) = segments(f'{row}\nZbcdefghijk, 0.000, 10.000, "/m/04rlf"\n')
    assert isinstance(entry, Rejected) and entry.reason == reason and entry.line == 1
    assert isinstance(good, LabelledSegment)


def test_a_cut_short_csv_is_refused_when_read_to_the_end(published):
    lines = published.csv_files[BALANCED].decode().splitlines(keepends=True)
    with pytest.raises(SourceError, match="holds 27 segments but its header states 28"):
        list(parse_segments(iter(lines[:-1]), name=BALANCED))


def test_rows_outside_the_subset_are_skipped_before_they_are_checked():
    text = '#NAME?, 0.000, 10.000, "/m/09x0r"\nabcdefghijk, 0.000, 10.000, "/m/09x0r"\n' \
           'Zbcdefghijk, 0.000, 10.000, "/m/09x0r,/m/0342h"\n'
    entries = segments(text, keep=lambda labels: "/m/0342h" in labels)
    assert [e.segment.ytid for e in entries] == ["Zbcdefghijk"]


def test_music_subtree_follows_every_parent_and_stops_at_cycles(ontology):
    music = descendants(ontology, MUSIC)
    assert {"/m/02sgy", "/m/0239kh", "/m/0395lw", "/m/03w41f", "/t/dd00031"} <= music
    assert not {"/m/09x0r", "/m/07yv9", "/t/dd00041"} & music
    cyclic = {"a": node("a", "b"), "b": node("b", "c", "a"), "c": node("c", "b", "missing")}
    assert descendants(cyclic, "b") == {"a", "b", "c", "missing"}
    with pytest.raises(SourceError, match="not a node of the AudioSet ontology"):
        descendants(ontology, "/m/nothing")


def test_class_names_keep_quoted_commas(published, tmp_path: Path):
    path = tmp_path / CLASS_FILE
    path.write_bytes(published.csv_files[CLASS_FILE])
    names = read_class_names(path)
    assert names["/m/05zppz"] == "Male speech, man speaking"
    assert names["/m/04rlf"] == "Music"


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON"),
    (b'{"id": "/m/04rlf"}', "must be a JSON list"),
    (b'[{"id": "/m/04rlf", "child_ids": []}]', "node 0 lacks"),
])
def test_a_damaged_ontology_is_refused(tmp_path: Path, content, message):
    path = tmp_path / "ontology.json"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        read_ontology(path)


def test_captions_name_the_music_labels_and_add_the_others(ontology):
    names = {mid: n.name for mid, n in ontology.items()}
    music = descendants(ontology, MUSIC)
    labels = ("/m/04rlf", "/m/0342h", "/m/06by7", "/m/02hnl")
    assert caption(labels, names, music, MUSIC) == "Music with Guitar, Rock music and Drum kit."
    assert caption(("/m/07y_7", "/m/0dwsp"), names, music, MUSIC) == "Music with Violin and Marimba."
    assert caption(("/m/04rlf", "/m/05zppz", "/m/09x0r"), names, music, MUSIC) == \
        "Music. Also heard: Male speech and Speech."
    assert caption(("/m/0342h", "/m/unknown"), names, music, MUSIC) == "Music with Guitar."


@pytest.mark.parametrize("options, message", [
    ({"split": "validation"}, "unknown split validation"),
    ({"split": "balanced,test"}, "unknown split test"),
])
def test_unknown_split_is_a_source_error(tmp_path: Path, options, message):
    with pytest.raises(SourceError, match=message):
        SOURCE.catalog(SourceContext(DataRoot(tmp_path), Settings(), options))



# --- the source against the storage, GitHub and YouTube stand-ins -----------------------------------------


@pytest.fixture
def served(mirror: MirrorServer, mirror_settings: Settings, published, monkeypatch: pytest.MonkeyPatch) -> Settings:
    hosts = published_audioset.register(mirror, published)
    monkeypatch.setenv("MUSICTEXT_MIRRORS", json.dumps({**mirror_settings.mirrors, **hosts}))
    return load_settings()


def _item_id(segment: published_audioset.Segment) -> str:
    return make_item_id("audioset", segment.ytid, segment.start_s)


def _csv_gets(mirror: MirrorServer, name: str) -> int:
    return sum(entry.method == "GET" and entry.status == 200 for entry in mirror.requests_for(f"/audioset/{name}"))


def _video_gets(mirror: MirrorServer) -> int:
    return sum(entry.path.startswith("/watch?v=") for entry in mirror.log)


def test_the_catalog_is_every_music_segment_of_the_chosen_splits(served: Settings, published, mirror) -> None:
    root = DataRoot(served.root)
    rows = SOURCE.catalog(SourceContext(root, served, {"split": "eval,balanced"}))
    expected = published.music("eval") + published.music("balanced")
    assert [row.item_id for row in rows] == [_item_id(segment) for segment in expected]
    assert _csv_gets(mirror, SPLIT_FILES["unbalanced"]) == 0
    by_id = {row.item_id: row for row in rows}

    first = by_id["audioset:-setb000_yt@30"]
    assert (first.split, first.source, first.start_s, first.end_s) == ("train", "-setb000_yt", 30.0, 40.0)
    assert first.captions == ("Music with Guitar, Rock music and Drum kit.",)
    assert first.tags == ("music", "guitar", "rock music", "drum kit")
    assert first.license == "CC-BY-4.0"
    assert first.extra_fields == {"group": "-setb000_yt", "segment_downloaded": True,
                                  "audioset_split": "balanced_train",
                                  "labels": ["/m/04rlf", "/m/0342h", "/m/06by7", "/m/02hnl"]}
    guitar_only = by_id["audioset:Asetb001_yt@0"]  # labels are not propagated: no /m/04rlf, still music
    assert guitar_only.captions == ("Music with Guitar.",) and guitar_only.tags == ("guitar",)
    cowbell = by_id["audioset:Asetb002_yt@10"]  # below Percussion and below Bell; a short segment
    assert (cowbell.end_s, cowbell.tags) == (16.5, ("cowbell",))
    with_speech = by_id["audioset:Asetb011_yt@31"]
    assert with_speech.captions == ("Music. Also heard: Speech.",) and with_speech.tags == ("music", "speech")
    assert by_id["audioset:-sete000_yt@30"].split == "test"
    assert json.loads(by_id["audioset:-sete000_yt@30"].extra)["audioset_split"] == "eval"

    rejected = read_status(root.status_dir("catalog", "audioset"))
    assert {item_id: r.reason for item_id, r in rejected.items()} == {f"audioset:{BALANCED}#8": "bad_ytid"}


def test_a_limited_catalog_fetches_only_the_csvs_it_needs(served: Settings, published, mirror) -> None:
    ctx = SourceContext(DataRoot(served.root), served, {"split": "balanced,unbalanced"}, 20)
    rows = SOURCE.catalog(ctx)
    assert [row.item_id for row in rows] == [_item_id(segment) for segment in published.music("balanced", 20)]
    assert (_csv_gets(mirror, BALANCED), _csv_gets(mirror, SPLIT_FILES["unbalanced"])) == (1, 0)


def test_another_subtree_is_chosen_by_its_mid(served: Settings, published) -> None:
    ctx = SourceContext(DataRoot(served.root), served, {"labels": "/m/0l14md"})  # Percussion
    rows = SOURCE.catalog(ctx)
    percussion = {"/m/0l14md", "/m/02hnl", "/m/0239kh", "/m/0dwsp"}
    expected = [s for s in published.music("balanced") if percussion & set(s.labels)]
    assert [row.item_id for row in rows] == [_item_id(segment) for segment in expected]
    assert rows[0].captions == ("Percussion with Drum kit. Also heard: Music, Guitar and Rock music.",)


@pytest.mark.integration
def test_ingest_preprocess_verify_and_a_second_run_does_nothing(
    served: Settings, published, mirror: MirrorServer, prefect_server: str
) -> None:
    root = DataRoot(served.root)
    catalog, acquire = stages.ingest("audioset", {}, limit=20, root=str(root.path))
    expected = published.music("balanced", 20)
    assert [row.item_id for row in read_manifest(root.manifest("audioset"))] == [_item_id(s) for s in expected]
    assert (catalog.items, acquire.ok, acquire.failed) == (20, 18, 2)
    assert acquire.failures == {"video_private": 1, "video_removed": 1}

    assert stages.preprocess("audioset", root=str(root.path)).ok == 18
    verify = stages.verify("audioset", [], root=str(root.path))
    assert "verdict ok" in verify.extra and verify.failed == 0
    for segment in expected:
        if segment.key in published_audioset.UNAVAILABLE:
            continue
        samples, rate = sf.read(root.clip_path("audioset", _item_id(segment)), dtype="float32", always_2d=True)
        assert rate == 44_100
        assert len(samples) / rate == pytest.approx(segment.end_s - segment.start_s, abs=0.05)  # 4 s, 6.5 s too
        assert dominant_hz(samples.T, rate, 0.2, 0.8) == pytest.approx(timecode_hz(int(segment.start_s)), abs=5)

    csv_gets, videos = _csv_gets(mirror, BALANCED), _video_gets(mirror)
    again = stages.ingest("audioset", {}, limit=20, root=str(root.path))
    assert [summary.worked for summary in again] == [0, 0]
    assert again[1].skipped_permanent == 2
    assert (_csv_gets(mirror, BALANCED), _video_gets(mirror)) == (csv_gets, videos)


@pytest.mark.integration
def test_under_transient_faults_runs_complete_and_every_item_arrives_once(
    served: Settings, published, mirror: MirrorServer, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 % of all requests fail (5xx, 429, bodies cut anywhere, stalls past the read timeout): within two
    runs every eval segment is there, whole, once."""
    monkeypatch.setenv("MUSICTEXT_HTTP_TIMEOUT_S", "0.5")
    root = DataRoot(served.root)
    mirror.faults = Faults(rate=0.3, seed=11, kinds=ALL_KINDS, cut=None, stall_s=0.8)
    runs = []
    while len(runs) < 2 and (not runs or _transient_failures(root)):
        runs.append(stages.ingest("audioset", {"split": "eval"}, limit=20, root=str(root.path)))
    assert mirror.faults.injected >= 10
    assert _transient_failures(root) == []
    ids = [row.item_id for row in read_manifest(root.manifest("audioset"))]
    assert ids == [_item_id(segment) for segment in published.music("eval")]
    assert sum(run[1].ok for run in runs) == len(ids)  # every segment downloaded once
    rows = read_manifest(root.manifest("audioset"))
    for row in rows:
        assert segment_seconds(SOURCE.audio_path(row, root)) == pytest.approx(row.end_s - row.start_s, abs=0.05)
    assert [p for p in root.path.rglob("*") if ".part" in p.name or p.name.endswith(".tmp")] == []


def _video_ending_at(seconds: float, folder: Path) -> Path:
    """The timecode video cut at ``seconds``: the host states that length, and the audio ends there."""
    source, cut = folder / "timecode.webm", folder / f"ends-{seconds:g}.webm"
    source.write_bytes(timecode_webm())
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-t", str(seconds),
                    "-c", "copy", str(cut)], check=True, capture_output=True, timeout=60)
    return cut


def test_end_of_video_segments_are_whole_and_a_video_shorter_than_its_row_is_permanent(
    served: Settings, mirror: MirrorServer, tmp_path: Path
) -> None:
    """The segment ``10–16.5 s`` of a video that ends at 16.48 s is AudioSet's end-of-video segment: whole.
    A row ``30–40 s`` of a video that now ends at 36 s, or at 25 s, cannot be what its labels describe: the
    permanent ``video_shorter``, with no file left; only the host's own stated length makes it permanent."""
    root = DataRoot(served.root)
    rows = {row.item_id: row for row in SOURCE.catalog(SourceContext(root, served, {}))}
    end, shorter, gone = (rows["audioset:Asetb002_yt@10"], rows["audioset:-setb000_yt@30"],
                          rows["audioset:-setb024_yt@30"])
    mirror.media(end.source, _video_ending_at(16.48, tmp_path))
    mirror.media(shorter.source, _video_ending_at(36.0, tmp_path))
    mirror.media(gone.source, _video_ending_at(25.0, tmp_path))

    records = list(youtube_items.acquire([end, shorter, gone], SourceContext(root, served, {})))

    assert [(r.is_ok, r.reason, r.failure_class) for r in records] == [
        (True, None, None), (False, "video_shorter", FailureClass.PERMANENT),
        (False, "video_shorter", FailureClass.PERMANENT)]
    assert segment_seconds(SOURCE.audio_path(end, root)) == pytest.approx(6.48, abs=0.03)
    assert "ends at 36.0" in records[1].detail and "not the 10 s the row describes" in records[1].detail
    assert not SOURCE.audio_path(shorter, root).exists() and not SOURCE.audio_path(gone, root).exists()
    assert not [entry for entry in mirror.log if entry.path == f"/media/{gone.source}.webm"]


def _transient_failures(root: DataRoot) -> list[str]:
    records = read_status(root.status_dir("acquire", "audioset")).values()
    return [r.item_id for r in records if r.failure_class == FailureClass.TRANSIENT]
