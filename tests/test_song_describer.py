"""Song Describer Dataset: the record, CSV and licence parsers on the published files' traps, then ingestion
end to end against a copy of Zenodo record 10072001 on the loopback mirror (whole-track items, the validated
subset, windows on request, 5xx and faults mid-zip and on a range request, truncated and hostile zips)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from corpus import DATASETS as CORPUS
from corpus import SPACE, build_corpus
from mirror import Faults
from published import mtg_jamendo as mtg_published
from published import song_describer as published

from downloaders import song_describer
from downloaders.base import SourceContext, SourceError
from downloaders.formats import FormatError
from downloaders.formats.mtg_jamendo import jamendo_group
from downloaders.formats.song_describer import read_licenses, read_record, read_tracks
from flows import stages
from store.layout import DataRoot, make_item_id
from store.manifest import canonical_row, read_manifest
from store.settings import load_settings
from store.status import read_status

CSV = song_describer.CSV
TWINS = (3301, 134799)
MUSICTEXT = Path(sys.executable).parent / "musictext"


def item_id(number: int, start: float | None = None) -> str:
    return make_item_id("song_describer", str(number), start)


# The parsers ---------------------------------------------------------------------------------------------


def test_the_csv_as_pandas_writes_it_gives_tracks_with_captions_ordered_by_id() -> None:
    copy = published.build()
    tracks, rejected = read_tracks(copy.files[CSV], CSV)
    assert rejected == []
    assert [t.track_id for t in tracks] == [t.number for t in copy.tracks]
    pop = next(t for t in tracks if t.track_id == 1004034)
    assert [c.caption_id for c in pop.captions] == [12, 859, 860]
    assert [(c.text, c.valid, c.familiarity) for c in pop.captions] == [
        ("Energetic pop, loud", True, 5), ("Upbeat electro-pop with bright synths.", True, 0),
        ("Danceable track, café vibes, “smooth” bass.", False, 3)]
    assert (pop.artist_id, pop.album_id, pop.duration_s, pop.member) == (
        368880, 118196, 202.5, "audio/34/1004034.2min.mp3")
    dreamy = next(t for t in tracks if t.track_id == 3301).captions[0]
    assert dreamy.text == 'Dreamy ambient track; "lo-fi" textures and a slow pulse.'
    jazz = next(t for t in tracks if t.track_id == 245103)
    assert jazz.captions[1].text == "Laid-back jazz; 日本語のキャプション too."


def test_malformed_rows_are_rejected_with_the_line_they_start_on_and_the_rest_is_kept() -> None:
    copy = published.build(malformed=True)
    tracks, rejected = read_tracks(copy.files[CSV], CSV)
    assert {r.line: r.reason for r in rejected} == copy.rejected
    encoding = next(r for r in rejected if r.reason == "bad_encoding")
    assert encoding.detail.startswith(f"{CSV} line {encoding.line}: caption is not UTF-8") and "xe9" in encoding.detail
    assert "../../etc/passwd" in next(r.detail for r in rejected if r.reason == "bad_path")
    assert published.EMPTY_ONLY_TRACK not in {t.track_id for t in tracks}
    assert [len(t.captions) for t in tracks] == [len(t.captions) for t in copy.tracks]


def test_other_values_pandas_may_write_and_files_that_are_not_the_table() -> None:
    head = ",".join(published.HEADER) + "\n"
    text = head + ("1,5,a,True,3.0,1,2,05/5.mp3,10\n2,5,b,,,1,2,05/5.mp3,10\n3,5,c,False,7,1,2,05/5.mp3,10\n"
                   "1,6,d,True,1,1,2,06/6.mp3,10\n4,7,e,True,1,1,2,08/7.mp3,10\n5,8,f,True,1,1,2,08/8.mp3,inf\n")
    tracks, rejected = read_tracks(text.encode(), CSV)
    assert [(c.caption_id, c.valid, c.familiarity) for c in tracks[0].captions] == [(1, True, 3), (2, False, None)]
    assert [(r.line, r.reason) for r in rejected] == [
        (4, "bad_familiarity"), (5, "duplicate_caption_id"), (6, "bad_path"), (7, "bad_duration")]
    with pytest.raises(FormatError, match="header lacks caption_id"):
        read_tracks(b"<!DOCTYPE html><html>Maintenance</html>", CSV)


def test_the_record_gives_each_file_its_size_and_md5_and_refuses_anything_else() -> None:
    copy = published.build()
    files = read_record(copy.record, "10072001")
    assert sorted(files) == sorted(copy.files)
    assert files[CSV].size == len(copy.files[CSV]) and len(files[CSV].md5) == 32
    entries = {"id": "10072001", "files": {"entries": {CSV: {"key": CSV, "size": 3, "checksum": "md5:" + "a" * 32}}}}
    assert read_record(json.dumps(entries).encode(), "10072001")[CSV].size == 3
    no_md5 = {"id": 10072001, "files": [{"key": CSV, "size": 3, "checksum": "sha256:" + "a" * 64}]}
    for data, message in [(b"<html>", "not JSON"), (json.dumps({"id": 1, "files": []}).encode(), "record 1"),
                          (json.dumps(no_md5).encode(), "md5")]:
        with pytest.raises(FormatError, match=message):
            read_record(data, "10072001")


def test_licences_are_read_per_track_from_the_jamendo_blocks() -> None:
    copy = published.build()
    licenses = read_licenses(copy.files[song_describer.LICENSES])
    assert licenses[3301] == "CC BY-SA 3.0 (http://creativecommons.org/licenses/by-sa/3.0/)"
    assert licenses[134799].startswith("CC BY-NC-SA 3.0") and 1100059 not in licenses
    other = b"audio/34/1004034.2min.mp3\nsomething else\nlicense: https://creativecommons.org/licenses/by/4.0\n"
    assert read_licenses(other) == {1004034: "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0)"}


def test_options_choose_the_subset_and_the_spans() -> None:
    assert song_describer.choice_of({}) == song_describer.Choice("full", "whole")
    assert song_describer.choice_of({"subset": "valid", "spans": "windows"}).spans == "windows"
    for bad, message in [({"subset": "validated"}, "subset='validated'"), ({"spans": "clips"}, "spans='clips'")]:
        with pytest.raises(SourceError, match=message):
            song_describer.choice_of(bad)
    assert set(song_describer.SOURCE.options) == {"subset", "spans"}


# Against the mirror --------------------------------------------------------------------------------------


@pytest.fixture()
def served(mirror, mirror_settings, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """The published copy (a variant when the test parametrizes it) on the mirror, with settings pointing the
    ``zenodo`` host key at it; returns (copy, data root)."""
    copy = published.build(**getattr(request, "param", {}))
    mirrors = json.loads(mirror.environment()["MUSICTEXT_MIRRORS"]) | published.serve(mirror, copy)
    monkeypatch.setenv("MUSICTEXT_MIRRORS", json.dumps(mirrors))
    return copy, DataRoot(load_settings().root)


def _context(root: DataRoot, options: dict | None = None) -> SourceContext:
    return SourceContext(root, load_settings(), options or {}, None)


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _leftovers(root: DataRoot) -> list[Path]:
    return [p for p in root.raw_dir("song_describer").rglob("*") if p.name.endswith((".part", ".tmp"))]


def _outcomes(records) -> dict[int, tuple[str, str | None, str | None]]:
    return {int(r.item_id.split(":")[1]): (r.outcome, r.reason, r.failure_class) for r in records}


def test_catalog_makes_one_whole_track_item_per_track_held_out_in_the_jamendo_group(served) -> None:
    copy, root = served
    rows = list(song_describer.catalog(_context(root)))
    assert [(r.item_id, r.start_s, r.end_s) for r in rows] == [(item_id(t.number), None, None) for t in copy.tracks]
    pop = next(r for r in rows if r.item_id == item_id(1004034))
    assert pop.captions == ("Energetic pop, loud", "Upbeat electro-pop with bright synths.",
                            "Danceable track, café vibes, “smooth” bass.")
    assert {k: v for k, v in pop.extra_fields.items() if k != "member"} == {
        "caption_ids": [12, 859, 860], "is_valid_subset": [True, True, False], "familiarity": [5, 0, 3],
        "artist_id": 368880, "album_id": 118196, "duration": 202.5, "subset": "full"}
    assert pop.source == "audio.zip#audio/34/1004034.2min.mp3"
    assert pop.license == ("CC BY-NC-SA 3.0 (http://creativecommons.org/licenses/by-nc-sa/3.0/); "
                           "captions CC BY-SA 4.0")
    assert next(r for r in rows if r.item_id == item_id(1100059)).license.startswith(song_describer.LICENSE)
    canonical = [canonical_row(r) for r in rows]
    assert {(r.split, r.held_out) for r in canonical} == {("test", True)}
    assert [r.group for r in rows] == [f"jamendo:{t.number}" for t in copy.tracks]
    assert read_status(root.status_dir("catalog", "song_describer")) == {}


def test_twins_of_mtg_jamendo_tracks_share_their_group() -> None:
    mtg = {t.number: t for t in mtg_published.TRACKS}
    for number in TWINS:
        twin = published.build().track(number)
        assert (mtg[number].split, mtg[number].artist, mtg[number].duration_s) == ("test", twin.artist,
                                                                                    twin.duration_s)
        assert jamendo_group(mtg[number].track_id) == jamendo_group(number) == f"jamendo:{number}"


def test_the_validated_subset_keeps_only_validated_captions_of_tracks_that_have_one(served) -> None:
    copy, root = served
    rows = list(song_describer.catalog(_context(root, {"subset": "valid"})))
    expected = [t for t in copy.tracks if t.valid_captions()]
    assert [r.item_id for r in rows] == [item_id(t.number) for t in expected]
    assert {48800, 1350001}.isdisjoint(int(r.item_id.split(":")[1]) for r in rows)
    for row, track in zip(rows, expected, strict=True):
        assert row.extra_fields["caption_ids"] == [c.caption_id for c in track.valid_captions()]
        assert set(row.extra_fields["is_valid_subset"]) == {True}
        assert len(row.captions) == len(row.extra_fields["familiarity"]) == len(track.valid_captions())


def test_windows_on_request_cover_the_two_minute_excerpt_and_whole_track_settings_still_win(
    served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = served
    monkeypatch.setenv("MUSICTEXT_CLIP_S", "50")
    monkeypatch.setenv("MUSICTEXT_CLIP_HOP_S", "50")
    rows = {r.item_id: (r.start_s, r.end_s) for r in song_describer.catalog(_context(root, {"spans": "windows"}))}
    assert [rows[item_id(1004034, s)] for s in (0, 50, 100)] == [(0, 50), (50, 100), (100, 120)]
    assert [rows[item_id(48800, s)] for s in (0, 50)] == [(0, 50), (50, 95)]
    assert rows[item_id(3301, 0)] == (0, 11.5) and item_id(1004034) not in rows
    monkeypatch.setenv("MUSICTEXT_WHOLE_TRACKS", '["song_describer"]')
    whole = list(song_describer.catalog(_context(root, {"spans": "windows"})))
    assert {(r.start_s, r.end_s) for r in whole} == {(None, None)}


@pytest.mark.parametrize("served", [{"malformed": True}], indirect=True)
def test_5xx_on_the_metadata_is_retried_and_rejected_rows_are_recorded_by_line(served, mirror) -> None:
    copy, root = served
    mirror.faults = Faults(script=("503", None, "500", "503"))
    rows = list(song_describer.catalog(_context(root)))
    assert mirror.faults.injected == 4 and len(rows) == len(copy.tracks)
    assert [status for _, path, status in mirror.requests[:5]] == [503, 200, 500, 503, 200]
    assert mirror.requests[2][1] == copy.url_path(CSV)
    rejected = read_status(root.status_dir("catalog", "song_describer"))
    assert {r.item_id: r.reason for r in rejected.values()} == {
        make_item_id("song_describer", f"{CSV}#{line}"): reason for line, reason in copy.rejected.items()}


def test_a_fault_mid_zip_and_on_the_range_request_resumes_and_a_second_run_asks_nothing(served, mirror) -> None:
    copy, root = served
    ctx = _context(root)
    rows = list(song_describer.catalog(ctx))
    zip_path = copy.url_path(song_describer.AUDIO_ZIP)
    mirror.faults = Faults(script=("drop", "503", "drop"), paths=(zip_path,))
    records = list(song_describer.acquire(rows, ctx))
    assert {(r.outcome, r.reason) for r in records} == {("ok", None)}
    ranges = [entry.headers.get("Range") for entry in mirror.requests_for(zip_path)]
    assert ranges[0] is None and all(ranges[1:]) and len(ranges) == 4
    raw = root.raw_dir("song_describer")
    assert {m for m in _files(raw) if m.endswith(".mp3")} == set(copy.members)
    for member, data in copy.members.items():
        assert (raw / member).read_bytes() == data
    assert _leftovers(root) == []

    before = len(mirror.requests)
    again = list(song_describer.acquire(rows, ctx))
    assert [r.outcome for r in again] == ["ok"] * len(rows) and len(mirror.requests) == before


def test_a_zip_that_keeps_answering_503_is_recorded_per_item_as_transient(served, mirror) -> None:
    copy, root = served
    ctx = _context(root)
    rows = list(song_describer.catalog(ctx))
    zip_path = copy.url_path(song_describer.AUDIO_ZIP)
    mirror.respond(zip_path, 503, message="Service Unavailable")
    records = list(song_describer.acquire(rows, ctx))
    assert set(_outcomes(records).values()) == {("failed", "server_error", "transient")}
    raw = root.raw_dir("song_describer")
    assert "503" in records[0].detail and not (raw / "audio").exists()
    assert not (raw / song_describer.AUDIO_ZIP).exists(), "nothing unverified under the zip's name"
    assert [p.stat().st_size for p in _leftovers(root)] == [0], "only the empty part file a resume starts from"
    mirror.add(zip_path, copy.files[song_describer.AUDIO_ZIP])
    assert {r.outcome for r in song_describer.acquire(rows, ctx)} == {"ok"}


@pytest.mark.parametrize("served", [{"truncated": True}], indirect=True)
def test_a_truncated_zip_with_a_matching_md5_is_discarded_and_recorded_as_broken(served) -> None:
    _, root = served
    ctx = _context(root)
    records = list(song_describer.acquire(list(song_describer.catalog(ctx)), ctx))
    assert {(r.outcome, r.failure_class) for r in records} == {("failed", "transient")}
    assert {r.reason for r in records} <= {"truncated_archive", "corrupt_archive"}
    raw = root.raw_dir("song_describer")
    assert not (raw / song_describer.AUDIO_ZIP).exists() and not (raw / "audio").exists()


@pytest.mark.parametrize("served", [{"hostile": True, "bad_mp3": True}], indirect=True)
def test_hostile_members_and_a_member_without_audio_cost_only_their_own_items(served) -> None:
    copy, root = served
    ctx = _context(root)
    outcomes = _outcomes(song_describer.acquire(list(song_describer.catalog(ctx)), ctx))
    assert outcomes.pop(published.HOSTILE_LINK) == ("failed", "unsafe_archive", "permanent")
    assert outcomes.pop(published.HOSTILE_CLIMB) == ("failed", "missing_member", "permanent")
    assert outcomes.pop(published.BAD_MP3) == ("failed", "bad_audio", "permanent")
    assert set(outcomes.values()) == {("ok", None, None)} and len(outcomes) == len(copy.tracks) - 3
    raw = root.raw_dir("song_describer")
    for number in (published.HOSTILE_LINK, published.HOSTILE_CLIMB, published.BAD_MP3):
        assert not os.path.lexists(raw / copy.track(number).member), number
    assert not (raw.parent / "outside.mp3").exists() and not list(root.path.rglob("escape"))
    assert _leftovers(root) == []


@pytest.mark.integration
def test_ingest_through_prefect_then_a_second_run_does_nothing(served, mirror, prefect_server: str) -> None:
    copy, root = served
    summaries = stages.ingest("song_describer", {}, root=str(root.path))
    manifest = read_manifest(root.manifest("song_describer"))
    assert [r.item_id for r in manifest] == [item_id(t.number) for t in copy.tracks]
    assert all(r.held_out and r.split == "test" for r in manifest)
    assert summaries[1].ok == len(copy.tracks) and summaries[1].failed == 0

    before = len(mirror.requests)
    again = stages.ingest("song_describer", {}, root=str(root.path))
    assert again[0].worked == 0 and again[1].worked == 0
    assert len(mirror.requests) == before

    stages.preprocess("song_describer", root=str(root.path))
    for track in copy.tracks:
        info = sf.info(root.clip_path("song_describer", item_id(track.number)))
        assert (info.samplerate, info.channels) == (44_100, 2)
        assert info.duration == pytest.approx(track.seconds, abs=0.1)


@pytest.mark.integration
def test_evaluate_on_song_describer_prints_the_benchmark_table_of_the_fixture_audio(served, mirror,
                                                                                    cli_env: dict[str, str]) -> None:
    """The documented commands, as a user runs them: a run trained on another corpus, then SDD ingested,
    clipped and embedded, then ``evaluate RUN --on song_describer`` (``pytest -s`` shows the table)."""
    copy, root = served
    env = {**cli_env, **{k: v for k, v in os.environ.items() if k.startswith("MUSICTEXT_")}}
    build_corpus(root.path, tracks=12)
    commands = [
        ["train", "--model", "dsp", *(a for d in CORPUS for a in ("-d", d)), "--head", "pooled", "--run-id",
         "fixture", "--max-steps", "20", "--batch-size", "16", "--eval-every", "10", "--freeze-encoder", "--lr", "3e-3",
         "--device", "cpu"],
        ["pipeline", "--dataset", "song_describer", "--model", "dsp"],
        ["evaluate", "fixture-pooled", "--on", "song_describer"],
    ]
    for command in commands:
        done = subprocess.run([str(MUSICTEXT), *command], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
    print(done.stdout)
    captions = sum(len(t.captions) for t in copy.tracks)
    validated = [t for t in copy.tracks if any(c.valid for c in t.captions)]
    table = " ".join(done.stdout.split())
    assert f"song_describer, all captions, {len(copy.tracks)} music candidates, {captions} text candidates" in table
    assert (f"song_describer, validated captions, {len(validated)} music candidates, "
            f"{sum(bool(c.valid) for t in validated for c in t.captions)} text candidates") in table
    for row in ("fixture-pooled (pooled)", "untrained pooled (baseline)", "prototype (baseline)", "linear (baseline)"):
        assert done.stdout.count(row) == 2, row
    report = root.evaluation_dir("song_describer") / "evaluation.md"
    assert f"dsp vectors of space {SPACE}, one per item of song_describer" in report.read_text()
