"""FMA: the tracks.csv / genres.csv / checksums parsers on the published files' traps, then ingestion end to
end against a copy in the published layout on the loopback mirror (BZIP2 zips, the empty erratum file,
faults, bad zips and members)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from mirror import Faults
from published import fma as published

from downloaders import fma
from downloaders.base import SourceContext, SourceError
from downloaders.formats.fma import (
    FormatError,
    Rejected,
    Track,
    audio_member,
    in_subset,
    read_genres,
    read_sha1sums,
    read_tracks,
)
from flows import stages
from processors.clip import windows
from store.layout import DataRoot, make_item_id
from store.manifest import read_manifest
from store.settings import load_settings
from store.status import read_status

HEADER = (",set,set,track,track,track,track\n"
          ",split,subset,genre_top,genres,genres_all,tags\n"
          "track_id,,,,,,\n")


def _metadata_member(copy: published.Published, name: str) -> str:
    with zipfile.ZipFile(io.BytesIO(copy.files["fma_metadata.zip"])) as archive:
        return archive.read(f"fma_metadata/{name}").decode("utf-8")


def test_tracks_csv_two_row_header_literal_lists_and_multiline_bios() -> None:
    copy = published.build()
    entries = list(read_tracks(io.StringIO(_metadata_member(copy, "tracks.csv"), newline="")))
    tracks = [e for e in entries if isinstance(e, Track)]
    assert [t.track_id for t in tracks] == [t.track_id for t in copy.tracks]
    two = next(t for t in tracks if t.track_id == 2)
    assert (two.subset, two.split, two.genre_top, two.genre_ids, two.tags) == (
        "small", "train", "Hip-Hop", (21,), ("indie", "Lo-Fi"))
    assert (two.title, two.artist, two.license, two.duration_s) == (
        "Track 2, take 2", "Artist 0", published.LICENSE, 77.0)
    several_roots = next(t for t in tracks if t.track_id == published.NO_TOP_TRACK)
    assert several_roots.genre_top is None and several_roots.genre_ids == (15, 12)
    (rejected,) = [e for e in entries if isinstance(e, Rejected)]
    assert rejected.reason == "bad_list" and f"track {published.HOSTILE_ROW_TRACK}" in rejected.detail


def test_code_in_a_list_column_is_rejected_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = HEADER + (
        f"1,training,small,Rock,\"__import__('os').system('touch {marker}')\",[12],[]\n"
        "2,training,small,Rock,[12],[12],\"['ok', 3]\"\n"
        f"3,training,small,Rock,[12],[12],\"{'[' * 200_000}\"\n"
        "4,test,small,,[12],[12],[]\n"
        "5,training,huge,Rock,[12],[12],[]\n"
        "6,holdout,small,Rock,[12],[12],[]\n"
        "x7,training,small,Rock,[12],[12],[]\n"
    )
    entries = list(read_tracks(io.StringIO(text, newline="")))
    assert not marker.exists()
    assert [(e.line, e.reason) for e in entries if isinstance(e, Rejected)] == [
        (4, "bad_list"), (5, "bad_list"), (6, "bad_list"), (8, "bad_subset"), (9, "bad_split"),
        (10, "bad_track_id")]
    (kept,) = [e for e in entries if isinstance(e, Track)]
    assert (kept.track_id, kept.split, kept.genre_top) == (4, "test", None)


def test_a_blank_level0_cell_continues_its_group_and_a_missing_column_is_an_error() -> None:
    text = ",set,,track,,,\n,split,subset,genre_top,genres,genres_all,tags\ntrack_id,,,,,,\n" \
           "7,validation,medium,Pop,[10],[10],[]\n"
    (track,) = read_tracks(io.StringIO(text, newline=""))
    assert (track.subset, track.split, track.genre_ids) == ("medium", "valid", (10,))
    with pytest.raises(FormatError, match="set.subset"):
        list(read_tracks(io.StringIO(",set,track,track,track\n,split,genre_top,genres,genres_all\n")))


def test_subsets_nest_and_members_follow_the_published_paths() -> None:
    assert in_subset("small", "medium") and in_subset("medium", "medium") and not in_subset("large", "medium")
    assert in_subset("large", "full") and not in_subset("medium", "small")
    assert audio_member("small", 2) == "fma_small/000/000002.mp3"
    assert audio_member("large", 133297) == "fma_large/133/133297.mp3"


def test_checksums_and_genres_files_parse() -> None:
    digest = "5e421474f0cbcf35648753fe1fd3cc22788d1bbe"
    sums = read_sha1sums(f"{digest}  002/002624.mp3\n{digest.upper()} *003/003000.mp3\n\n")
    assert sums == {"002/002624.mp3": digest, "003/003000.mp3": digest}
    with pytest.raises(FormatError, match="line 1"):
        read_sha1sums("002/002624.mp3\n")
    genres = read_genres(io.StringIO(published.genres_csv().decode()))
    assert genres[1] == "Avant-Garde" and genres[1235] == "Instrumental"


def test_options_validate_subset_and_sums() -> None:
    choice = fma.choice_of({})
    assert choice.subset == "small" and choice.sha1 == fma.SHA1
    custom = fma.choice_of({"subset": "medium", "sha1": "A" * 40, "metadata_sha1": "b" * 40})
    assert custom.sha1["medium"] == "a" * 40 and custom.sha1["metadata"] == "b" * 40
    assert custom.sha1["small"] == fma.SHA1["small"]
    with pytest.raises(SourceError, match="subset='tiny'"):
        fma.choice_of({"subset": "tiny"})
    with pytest.raises(SourceError, match="sha1='xyz'"):
        fma.choice_of({"sha1": "xyz"})


# Against the mirror -------------------------------------------------------------------------------------


@pytest.fixture()
def served(mirror, mirror_settings, request: pytest.FixtureRequest) -> tuple[published.Published, DataRoot]:
    """The published copy (a variant when the test parametrizes it) on the mirror; returns it and the
    data root the mirror settings point at."""
    copy = published.build(**getattr(request, "param", {}))
    assert published.serve(mirror, copy) == json.loads(mirror.environment()["MUSICTEXT_MIRRORS"])["fma"]
    return copy, DataRoot(mirror_settings.root)


def _context(root: DataRoot, options: dict, limit: int | None = None) -> SourceContext:
    return SourceContext(root, load_settings(), options, limit)


def _zip_gets(mirror) -> list[str]:
    return [path for method, path, _ in mirror.requests if method == "GET" and path.endswith(".zip")]


def test_catalog_picks_the_subset_tags_genres_and_records_rejected_rows(served) -> None:
    copy, root = served
    rows = fma.catalog(_context(root, copy.options("small")))
    small = copy.in_subset("small")
    assert [r.item_id for r in rows] == [make_item_id("fma", t.name) for t in small]
    for row, track in zip(rows, small, strict=True):
        assert row.tags == track.expected_tags()
        assert row.split == {"training": "train", "validation": "valid", "test": "test"}[track.split]
        assert (row.start_s, row.end_s, row.license, row.captions) == (None, None, published.LICENSE, ())
        assert row.source == f"fma_small.zip#{track.member('small')}"
        assert row.extra_fields["group"] == track.name and row.extra_fields["subset"] == "small"
    (rejected,) = read_status(root.status_dir("catalog", "fma")).values()
    assert rejected.item_id == "fma:tracks.csv#7" and rejected.reason == "bad_list"

    medium = fma.catalog(_context(root, copy.options("medium")))
    assert len(medium) == len(copy.in_subset("medium")) == 28
    assert {r.extra_fields["subset"] for r in medium} == {"small", "medium"}
    assert len(read_status(root.status_dir("catalog", "fma"))) == 1


def test_full_tracks_become_windows_of_their_stated_duration(served) -> None:
    copy, root = served
    rows = fma.catalog(_context(root, {"subset": "full", "metadata_sha1": copy.sha1["fma_metadata.zip"]}))
    expected = [(make_item_id("fma", t.name, start), start, end) for t in copy.tracks
                for start, end in windows(t.full_duration_s, 30.0, 30.0, 1.0)]
    assert [(r.item_id, r.start_s, r.end_s) for r in rows] == expected
    assert {r.extra_fields["member"] for r in rows if r.extra_fields["group"] == "000002"} == {
        "fma_full/000/000002.mp3"}


@pytest.mark.parametrize("variable", [("MUSICTEXT_WHOLE_TRACKS", '["fma"]'), ("MUSICTEXT_CLIP_S", "0")])
def test_full_tracks_are_one_row_each_when_whole_tracks_are_asked_for(
    served, variable: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    copy, root = served
    monkeypatch.setenv(*variable)
    rows = fma.catalog(_context(root, {"subset": "full", "metadata_sha1": copy.sha1["fma_metadata.zip"]}))
    assert [(r.item_id, r.start_s, r.end_s) for r in rows] == [
        (make_item_id("fma", t.name), None, None) for t in copy.tracks]


def test_a_wrong_metadata_sum_stops_the_catalog_with_a_clear_error(served) -> None:
    _, root = served
    with pytest.raises(SourceError, match="checksum"):
        fma.catalog(_context(root, {"metadata_sha1": "0" * 40}))
    assert not (root.raw_dir("fma") / "fma_metadata.zip").exists()


def test_a_corrupt_download_is_recorded_for_every_row_and_leaves_no_file(served, mirror) -> None:
    copy, root = served
    ctx = _context(root, copy.options(), limit=5)
    rows = fma.catalog(ctx)
    mirror.faults.corrupt["/fma/fma_small.zip"] = copy.files["fma_small.zip"][:-4096]
    records = list(fma.acquire(rows, ctx))
    assert [(r.item_id, r.reason, r.failure_class) for r in records] == [
        (row.item_id, "checksum_mismatch", "transient") for row in rows]
    raw = root.raw_dir("fma")
    assert not (raw / "fma_small.zip").exists() and not (raw / "fma_small").exists()
    assert [p for p in raw.rglob("*") if p.name.endswith((".part", ".tmp"))] == []


def test_a_truncated_zip_with_a_matching_sum_is_recorded_as_a_broken_archive(served, mirror) -> None:
    copy, root = served
    cut = copy.files["fma_small.zip"][: len(copy.files["fma_small.zip"]) // 2]
    mirror.add("/fma/fma_small.zip", cut)
    ctx = _context(root, {**copy.options(), "sha1": hashlib.sha1(cut).hexdigest()}, limit=5)
    rows = fma.catalog(ctx)
    records = list(fma.acquire(rows, ctx))
    assert {(r.outcome, r.failure_class) for r in records} == {("failed", "transient")}
    assert {r.reason for r in records} <= {"truncated_archive", "corrupt_archive"}
    assert not (root.raw_dir("fma") / "fma_small").exists()


@pytest.mark.integration
def test_limited_ingest_verifies_every_mp3_records_the_empty_one_and_a_second_run_does_nothing(
    served, mirror, prefect_server: str
) -> None:
    copy, root = served
    summaries = stages.ingest("fma", copy.options(), limit=20, root=str(root.path))
    chosen = copy.in_subset("small")[:20]
    assert published.EMPTY_TRACK in [t.track_id for t in chosen]
    manifest = read_manifest(root.manifest("fma"))
    assert [r.item_id for r in manifest] == [make_item_id("fma", t.name) for t in chosen]
    records = read_status(root.status_dir("acquire", "fma"))
    empty = records[make_item_id("fma", f"{published.EMPTY_TRACK:06d}")]
    assert (empty.reason, empty.failure_class) == ("empty_audio", "permanent")
    assert "mdeff/fma#44" in empty.detail
    assert summaries[1].ok == 19 and summaries[1].failures == {"empty_audio": 1}
    extracted = {p.relative_to(root.raw_dir("fma") / "fma_small").as_posix()
                 for p in (root.raw_dir("fma") / "fma_small").rglob("*.mp3")}
    assert extracted == {f"{t.name[:3]}/{t.name}.mp3" for t in chosen}
    assert sorted(_zip_gets(mirror)) == ["/fma/fma_metadata.zip", "/fma/fma_small.zip"]

    requests_before = len(mirror.requests)
    again = stages.ingest("fma", copy.options(), limit=20, root=str(root.path))
    assert again[0].worked == 0 and again[1].worked == 0 and again[1].skipped_permanent == 1
    assert len(mirror.requests) == requests_before

    stages.preprocess("fma", root=str(root.path))
    verdict = stages.verify("fma", [], root=str(root.path))
    assert "verdict ok" in verdict.extra and verdict.failed == 0 and verdict.ok == 19
    for track in chosen:
        if track.empty:
            continue
        info = sf.info(root.clip_path("fma", make_item_id("fma", track.name)))
        assert (info.samplerate, info.channels) == (44_100, 2)
        assert info.duration == pytest.approx(track.duration_s, abs=0.05)


@pytest.mark.integration
def test_under_transient_faults_every_item_still_arrives_once(served, mirror, prefect_server: str) -> None:
    copy, root = served
    mirror.faults = Faults(rate=0.3, seed=4)  # only two requests (two zips): this seed fails first tries
    stages.ingest("fma", copy.options(), limit=20, root=str(root.path))
    assert mirror.faults.injected > 0
    ids = [r.item_id for r in read_manifest(root.manifest("fma"))]
    assert ids == [make_item_id("fma", t.name) for t in copy.in_subset("small")[:20]]
    records = read_status(root.status_dir("acquire", "fma"))
    assert sorted(records) == sorted(ids)
    assert {r.reason for r in records.values()} == {None, "empty_audio"}


@pytest.mark.integration
@pytest.mark.parametrize("served", [{"hostile": True, "bad_member_sum": True}], indirect=True)
def test_a_hostile_member_and_a_member_with_a_wrong_sum_cost_only_their_own_items(
    served, prefect_server: str
) -> None:
    copy, root = served
    stages.ingest("fma", copy.options(), limit=20, root=str(root.path))
    records = read_status(root.status_dir("acquire", "fma"))
    outcome = {key.split(":")[1]: (r.outcome, r.reason, r.failure_class) for key, r in records.items()}
    assert outcome.pop("000005") == ("failed", "unsafe_archive", "permanent")
    assert outcome.pop("000010") == ("failed", "checksum_mismatch", "permanent")
    assert outcome.pop(f"{published.EMPTY_TRACK:06d}")[1] == "empty_audio"
    assert set(outcome.values()) == {("ok", None, None)} and len(outcome) == 17
    folder = root.raw_dir("fma") / "fma_small"
    assert not os.path.lexists(folder / published.HOSTILE_MEMBER)
    assert not os.path.lexists(folder / published.BAD_SUM_MEMBER)
    assert [p for p in root.raw_dir("fma").rglob("*") if p.name.endswith((".part", ".tmp"))] == []
