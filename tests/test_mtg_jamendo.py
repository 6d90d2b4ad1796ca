"""MTG-Jamendo: the TSV and checksum parsers on the published files' traps, then ingestion end to end
against a copy in the published layout on the loopback mirror (windows, partial tars, faults, bad tars)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import soundfile as sf
from published import mtg_jamendo as published

from downloaders import mtg_jamendo
from downloaders.base import SourceContext, SourceError
from downloaders.formats.mtg_jamendo import FormatError, read_checksums, read_tracks
from flows import stages
from processors.clip import windows
from store.layout import DataRoot, make_item_id
from store.manifest import read_manifest
from store.settings import load_settings
from store.status import read_status

TSV = "autotagging_moodtheme.tsv"


def test_tags_spill_into_extra_columns_and_crlf_is_not_part_of_the_last_tag() -> None:
    data = (b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n"
            b"track_0000948\tartist_000087\talbum_000149\t48/948.mp3\t212.7\tmood/theme---background\r\n"
            b"track_0005634\tartist_000811\talbum_000867\t34/5634.mp3\t233.1\tmood/theme---documentary\t"
            b"mood/theme---emotional\tgenre---rock\tinstrument---guitar\r\n")
    tracks, rejected = read_tracks(data, TSV)
    assert rejected == []
    assert [t.track_id for t in tracks] == ["track_0000948", "track_0005634"]
    assert tracks[0].tags == (("mood/theme", "background"),)
    assert tracks[1].tags == (("mood/theme", "documentary"), ("mood/theme", "emotional"), ("genre", "rock"),
                              ("instrument", "guitar"))
    assert tracks[1].duration_s == 233.1
    assert (tracks[1].archive_index, tracks[1].member("audio"), tracks[1].member("audio-low")) == (
        "34", "34/5634.mp3", "34/5634.low.mp3")


def test_malformed_rows_are_rejected_with_their_line_and_the_rest_is_kept() -> None:
    copy = published.build()
    tracks, rejected = read_tracks(copy.meta[f"data/{TSV}"], TSV)
    assert len(tracks) == len(published.TRACKS)
    assert [(r.line, r.reason) for r in rejected] == [(5, "bad_path"), (6, "bad_duration")]
    assert "../../etc/passwd" in rejected[0].detail and rejected[0].detail.startswith(f"{TSV} line 5:")


def test_a_symlink_fetched_as_text_is_refused_with_a_clear_error() -> None:
    copy = published.build()
    with pytest.raises(FormatError, match="symlink"):
        read_tracks(copy.meta["data/autotagging.tsv"], "autotagging.tsv")


def test_checksum_lists_parse_and_a_garbled_line_is_an_error() -> None:
    digest = "c569f4b7264995c06de93eb6c20138d9355274508dde37085ed992fc990d930b"
    text = f"{digest} raw_30s_audio-00.tar\n\n{digest.upper()}  63/1159663.mp3\r\n"
    sums = read_checksums(text.encode(), "list.txt")
    assert sums == {"raw_30s_audio-00.tar": digest, "63/1159663.mp3": digest}
    with pytest.raises(FormatError, match="line 2"):
        read_checksums(f"{digest} a.tar\nnot-a-sum b.tar\n".encode(), "list.txt")


def test_options_choose_the_track_list_split_and_tars() -> None:
    default = mtg_jamendo.choice_of({})
    assert (default.subset, default.audio, default.split, default.tar_dataset) == (
        "autotagging_moodtheme", "audio-low", "split-0", "autotagging_moodtheme")
    genre = mtg_jamendo.choice_of({"subset": "autotagging_genre", "audio": "audio", "split": "split-3"})
    assert genre.tar_dataset == "raw_30s"
    assert genre.checksum_list("tracks") == "download/raw_30s_audio_sha256_tracks.txt"
    assert genre.split_files()["splits/split-3/autotagging_genre-validation.tsv"] == "valid"
    assert mtg_jamendo.choice_of({"subset": "autotagging"}).tsv == "raw_30s_cleantags_50artists.tsv"
    assert mtg_jamendo.choice_of({"subset": "raw_30s"}).split is None
    for bad, message in [({"subset": "raw"}, "subset='raw'"), ({"audio": "melspecs"}, "audio='melspecs'"),
                         ({"split": "split-5"}, "split='split-5'"),
                         ({"subset": "raw_30s", "split": "split-0"}, "no official splits")]:
        with pytest.raises(SourceError, match=message):
            mtg_jamendo.choice_of(bad)


# End to end against the mirror -------------------------------------------------------------------------


def expected_rows(copy: published.Published) -> list[tuple[str, float, float, str]]:
    """(item id, start, end, member) in catalog order: tracks by tar, 5 s windows."""
    rows = []
    for track in sorted(copy.tracks, key=lambda t: t.folder):
        for start, end in windows(track.duration_s, 5.0, 5.0, 1.0):
            rows.append((make_item_id("mtg_jamendo", track.track_id, start), start, end, track.member))
    return rows


@pytest.fixture()
def served(mirror, mirror_settings, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """The published copy (a variant when the test parametrizes it) on the mirror, with settings
    pointing both host keys at it and 5 s windows; returns (copy, data root)."""
    copy = published.build(**getattr(request, "param", {}))
    mirrors = json.loads(mirror.environment()["MUSICTEXT_MIRRORS"]) | published.serve(mirror, copy)
    monkeypatch.setenv("MUSICTEXT_MIRRORS", json.dumps(mirrors))
    for name, value in published.CLIP_SETTINGS.items():
        monkeypatch.setenv(name, value)
    return copy, DataRoot(load_settings().root)


def _tar_gets(mirror) -> list[str]:
    return [path for method, path, _ in mirror.requests if method == "GET" and path.endswith(".tar")]


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_catalog_windows_each_track_and_orders_rows_by_tar(served) -> None:
    copy, root = served
    ctx = SourceContext(root, load_settings(), {}, None)
    rows = list(mtg_jamendo.catalog(ctx))
    assert [(r.item_id, r.start_s, r.end_s) for r in rows] == [e[:3] for e in expected_rows(copy)]
    first = next(r for r in rows if r.item_id == make_item_id("mtg_jamendo", "track_0014400", 5.0))
    assert (first.split, first.tags, first.license) == (
        "train", ("documentary", "emotional", "space", "soft"), mtg_jamendo.LICENSE)
    extra = first.extra_fields
    assert extra["group"] == "track_0014400"
    assert extra["tags_by_category"] == {"mood/theme": ["documentary", "emotional", "space", "soft"]}
    assert extra["member"] == "00/14400.low.mp3"
    assert first.source == ("autotagging_moodtheme/audio-low/autotagging_moodtheme_audio-low-00.tar"
                            "#00/14400.low.mp3")
    splits = {r.extra_fields["group"]: r.split for r in rows}
    assert splits["track_0003301"] == "test" and splits["track_0918148"] == "valid"
    assert splits["track_0920001"] is None
    rejected = read_status(root.status_dir("catalog", "mtg_jamendo"))
    assert sorted(r.reason for r in rejected.values()) == ["bad_duration", "bad_path"]


def test_whole_tracks_are_one_row_per_track_without_a_start(served, monkeypatch: pytest.MonkeyPatch) -> None:
    copy, root = served
    monkeypatch.setenv("MUSICTEXT_WHOLE_TRACKS", '["mtg_jamendo"]')
    rows = list(mtg_jamendo.catalog(SourceContext(root, load_settings(), {}, None)))
    tracks = sorted(copy.tracks, key=lambda t: t.folder)
    assert [(r.item_id, r.start_s, r.end_s) for r in rows] == [
        (make_item_id("mtg_jamendo", t.track_id), None, None) for t in tracks]
    assert [r.source.split("#")[1] for r in rows] == [t.member for t in tracks]


@pytest.mark.integration
def test_limited_ingest_fetches_only_the_tars_it_needs_and_a_second_run_does_nothing(
    served, mirror, prefect_server: str
) -> None:
    copy, root = served
    summaries = stages.ingest("mtg_jamendo", {}, limit=20, root=str(root.path))
    expected = expected_rows(copy)[:20]
    manifest = read_manifest(root.manifest("mtg_jamendo"))
    assert [r.item_id for r in manifest] == [e[0] for e in expected]
    assert summaries[1].ok == 20 and summaries[1].failed == 0
    assert sorted(_tar_gets(mirror)) == [f"/mtg-jamendo/{copy.tar_path(n)}" for n in ("00", "01", "48")]
    audio = root.raw_dir("mtg_jamendo") / "autotagging_moodtheme" / "audio-low"
    extracted = {name for name in _files(audio) if name.endswith(".mp3")}
    assert extracted == {e[3] for e in expected}
    assert "48/918148.low.mp3" not in extracted
    for member in extracted:
        assert (audio / member).read_bytes() == copy.members[member]

    requests_before = len(mirror.requests)
    again = stages.ingest("mtg_jamendo", {}, limit=20, root=str(root.path))
    assert again[0].worked == 0 and again[1].worked == 0
    assert len(mirror.requests) == requests_before

    stages.preprocess("mtg_jamendo", root=str(root.path))
    verdict = stages.verify("mtg_jamendo", [], root=str(root.path))
    assert "verdict ok" in verdict.extra and verdict.failed == 0
    for item_id, start, end, _ in expected:
        info = sf.info(root.clip_path("mtg_jamendo", item_id))
        assert info.samplerate == 44_100 and info.channels == 1
        assert info.duration == pytest.approx(end - start, abs=0.05)


@pytest.mark.integration
def test_under_transient_faults_every_item_still_arrives_once(served, mirror, prefect_server: str) -> None:
    copy, root = served
    mirror.faults.rate = 0.3
    stages.ingest("mtg_jamendo", {}, limit=20, root=str(root.path))
    assert mirror.faults.injected > 0
    ids = [r.item_id for r in read_manifest(root.manifest("mtg_jamendo"))]
    assert ids == [e[0] for e in expected_rows(copy)[:20]] and len(set(ids)) == 20
    records = read_status(root.status_dir("acquire", "mtg_jamendo"))
    assert {item_id: r.outcome for item_id, r in records.items()} == dict.fromkeys(ids, "ok")


@pytest.mark.integration
@pytest.mark.parametrize("served", [dict(hostile=True, truncated=True, bad_track_sum=True)], indirect=True)
def test_bad_tars_and_members_are_recorded_per_item_and_leave_no_partial_file(
    served, mirror, prefect_server: str
) -> None:
    copy, root = served
    tar00 = f"/mtg-jamendo/{copy.tar_path('00')}"
    mirror.faults.corrupt[tar00] = copy.audio[copy.tar_path("00")].replace(b"ustar", b"UST4R")
    stages.ingest("mtg_jamendo", {}, root=str(root.path))
    outcomes = _outcomes_by_track(root)
    for track in ("track_0000300", "track_0001200", "track_0014400", "track_1009600"):
        assert outcomes[track] == {("failed", "checksum_mismatch", "transient")}, track
    assert outcomes["track_0919999"] == {("failed", "unsafe_archive", "permanent")}
    assert outcomes["track_0000948"] == {("failed", "checksum_mismatch", "permanent")}
    cut = outcomes["track_0920001"]
    assert len(cut) == 1 and next(iter(cut))[1] in ("truncated_archive", "corrupt_archive")
    for track in ("track_0003348", "track_0918148", "track_0134799"):
        assert outcomes[track] == {("ok", None, None)}, track

    raw = root.raw_dir("mtg_jamendo")
    audio = raw / "autotagging_moodtheme" / "audio-low"
    assert [p for p in raw.rglob("*") if p.name.endswith((".part", ".tmp"))] == []
    assert not (raw / copy.tar_path("00")).exists()
    assert not (raw / copy.tar_path("01")).exists(), "a tar that does not decode is deleted for a fresh copy"
    assert not any(name.startswith("00/") for name in _files(audio))
    for number in (919999, 948, 920001):
        assert not os.path.lexists(audio / copy.track(number).member), number
    assert not (raw.parent / "outside.mp3").exists()
    for name in _files(audio):
        if name.endswith(".mp3"):
            assert (audio / name).read_bytes() == copy.members[name]

    del mirror.faults.corrupt[tar00]
    stages.ingest("mtg_jamendo", {}, root=str(root.path))
    outcomes = _outcomes_by_track(root)
    for track in ("track_0000300", "track_0001200", "track_0014400", "track_1009600"):
        assert outcomes[track] == {("ok", None, None)}, track
    assert outcomes["track_0919999"] == {("failed", "unsafe_archive", "permanent")}


def _outcomes_by_track(root: DataRoot) -> dict[str, set[tuple[str, str | None, str | None]]]:
    """The distinct (outcome, reason, class) of each track's windows, from the latest acquire records."""
    records = read_status(root.status_dir("acquire", "mtg_jamendo"))
    outcomes: dict[str, set[tuple[str, str | None, str | None]]] = {}
    for row in read_manifest(root.manifest("mtg_jamendo")):
        record = records[row.item_id]
        outcomes.setdefault(row.extra_fields["group"], set()).add(
            (record.outcome, record.reason, record.failure_class))
    return outcomes
