"""MSD subset + Last.fm: the HDF5, JSON and SQLite readers and the captions on the published files, then
ingestion end to end against copies in the published layouts on the loopback mirror (a preview folder,
Last.fm from the zip or the database, faults, a truncated subset, hostile and broken track files, and the
YouTube search strategy)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import unquote_plus

import h5py
import numpy as np
import pytest
import soundfile as sf
from published import msd as published

from downloaders import msd
from downloaders.base import SourceContext, SourceError
from downloaders.formats.msd import (
    Track,
    TrackFileError,
    caption,
    read_lastfm_db,
    read_lastfm_json,
    read_track,
    tags_over,
    track_id_of,
    youtube_query,
)
from flows import stages
from store.layout import DataRoot, make_item_id
from store.manifest import ManifestRow, read_manifest
from store.settings import load_settings
from store.status import read_status

COPY = published.build()


def _song(title: str) -> published.Song:
    return next(song for song in COPY.songs if song.title == title)


def _track(**fields: object) -> Track:
    base = {"track_id": "TRAAAAW128F429D538", "song_id": "SOMZWCG12A8C13C480", "title": "Into the Sun",
            "artist": "Ann Example", "release": "Daylight", "year": 1994, "duration_s": 211.3, "numbers": {},
            "ids": {}}
    return Track(**{**base, **fields})  # type: ignore[arg-type]


# ---- readers ---------------------------------------------------------------------------------------------


def test_a_track_file_is_read_from_its_three_compound_tables(tmp_path: Path) -> None:
    song = _song("Café Naïve")
    path = tmp_path / "track.h5"
    path.write_bytes(published.track_file(song))
    with h5py.File(path) as handle:
        assert handle["metadata/songs"].dtype["title"] == np.dtype("S1024")
        assert handle["analysis/songs"].dtype.names[0] == "analysis_sample_rate"
    track = read_track(path)
    assert (track.track_id, track.song_id, track.title, track.artist, track.release, track.year) == (
        song.track_id, song.song_id, "Café Naïve", "Zoë Exemple", "Chansons", 1968)
    assert track.duration_s == song.duration_s
    assert track.numbers["track_7digitalid"] == song.track_7digitalid
    assert track.numbers["time_signature"] == 4 and isinstance(track.numbers["tempo"], float)
    assert track.ids == {"artist_id": song.artist_id}


def test_year_zero_means_unknown(tmp_path: Path) -> None:
    path = tmp_path / "track.h5"
    path.write_bytes(published.track_file(_song("Unknown Year")))
    assert read_track(path).year is None


def test_files_that_are_not_track_files_are_clear_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(TrackFileError) as caught:
        read_track(garbage)
    assert caught.value.reason == "unreadable_hdf5"
    partial = tmp_path / "partial.h5"
    with h5py.File(partial, "w") as handle:
        handle.create_dataset("metadata/songs", data=np.zeros(1, dtype=[("title", "S8")]))
    with pytest.raises(TrackFileError, match="/analysis/songs") as caught:
        read_track(partial)
    assert caught.value.reason == "missing_table"


def test_track_members_are_found_with_or_without_the_data_folder() -> None:
    assert track_id_of("MillionSongSubset/data/A/A/A/TRAAAAW128F429D538.h5") == "TRAAAAW128F429D538"
    assert track_id_of("MillionSongSubset/A/A/A/TRAAAAW128F429D538.h5") == "TRAAAAW128F429D538"
    assert track_id_of("lastfm_subset/A/B/C/TRABCDE128F429D538.json") == "TRABCDE128F429D538"
    assert track_id_of("MillionSongSubset/data/A/B/A/TRAAAAW128F429D538.h5") is None
    assert track_id_of("MillionSongSubset/AdditionalFiles/subset_msd_summary_file.h5") is None


def test_lastfm_json_counts_as_strings_or_numbers_and_malformed_pairs_are_skipped() -> None:
    data = json.dumps({"track_id": "TRAAAAW128F429D538",
                       "tags": [["rock", "100"], ["indie", 60], ["bad"], [5, "10"], ["junk", "x"],
                                ["rock", "3"]],
                       "similars": []}).encode()
    assert read_lastfm_json(data) == {"rock": 100.0, "indie": 60.0}
    assert read_lastfm_json(b'{"artist": "a", "tags": []}') == {}
    for bad in (b"[1, 2]", b'{"tags": "rock"}', b"{not json"):
        with pytest.raises(ValueError):
            read_lastfm_json(bad)


def test_lastfm_db_gives_the_same_counts_as_the_json(tmp_path: Path) -> None:
    database = tmp_path / "lastfm_tags.db"
    database.write_bytes(COPY.lastfm_db)
    ids = [song.track_id for song in COPY.songs]
    counts = read_lastfm_db(database, ids)
    for song in COPY.songs:
        if song.lastfm is None:
            assert song.track_id not in counts
        else:
            assert counts[song.track_id] == read_lastfm_json(published.lastfm_json(song))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"definitely not sqlite" * 200)
    with pytest.raises(sqlite3.DatabaseError):
        read_lastfm_db(garbage, ids)


def test_tags_keep_counts_over_the_threshold_strongest_first_and_cleaned() -> None:
    counts = {"Female  Vocalists": 55.0, "chanson": 100.0, "french": 80.0, "French": 80.0, "80s": 9.99}
    assert tags_over(counts, 10) == ("chanson", "french", "female vocalists")
    assert tags_over(counts, 0) == ("chanson", "french", "female vocalists", "80s")


def test_captions_read_as_sentences_whatever_is_missing() -> None:
    tags = ("rock", "indie", "female vocalists", "90s")
    assert caption(_track(), tags) == ('"Into the Sun" by Ann Example, released in 1994, tagged rock, indie '
                                       "and female vocalists.")
    assert caption(_track(year=None), ("rock",)) == '"Into the Sun" by Ann Example, tagged rock.'
    assert caption(_track(), ()) == '"Into the Sun" by Ann Example, released in 1994.'
    assert caption(_track(title=""), ()) == "A song by Ann Example, released in 1994."
    assert caption(_track(artist=""), ("jazz", "cool jazz")) == ('"Into the Sun", released in 1994, tagged '
                                                                 "jazz and cool jazz.")
    assert caption(_track(title="", artist=""), tags) is None
    assert youtube_query(" Ann  Example", "Into the Sun ") == "Ann Example Into the Sun"


def _ctx(root: Path, **options: str) -> SourceContext:
    return SourceContext(DataRoot(root), load_settings(root=root), options)


def test_options_are_checked_with_errors_that_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="audio=folder needs audio_dir"):
        msd._options(_ctx(tmp_path))
    with pytest.raises(SourceError, match="is not a folder"):
        msd._options(_ctx(tmp_path, audio_dir=str(tmp_path / "nope")))
    with pytest.raises(SourceError, match="choose 'folder'"):
        msd._options(_ctx(tmp_path, audio="spotify"))
    with pytest.raises(SourceError, match="choose 'zip'"):
        msd._options(_ctx(tmp_path, audio="youtube", lastfm="api"))
    with pytest.raises(SourceError, match="not a number"):
        msd._options(_ctx(tmp_path, audio="youtube", min_tag_count="many"))
    options = msd._options(_ctx(tmp_path, audio="youtube", min_tag_count="25"))
    assert (options.audio, options.lastfm, options.min_tag_count) == ("youtube", "zip", 25.0)
    assert options.audio_dir is None


def test_previews_are_found_by_track_id_or_7digital_id_flat_or_nested(tmp_path: Path) -> None:
    songs = COPY.songs[:10]
    written = published.write_previews(tmp_path, songs)
    for song in songs:
        row = ManifestRow(make_item_id("msd", song.track_id), "msd", "x",
                          extra=ManifestRow.encode_extra({"track_7digitalid": song.track_7digitalid}))
        assert msd.find_preview(tmp_path, row) == written[song.track_id]
    assert {p.name.split(".", 1)[1] for p in written.values()} == {"mp3", "wav", "clip.mp3"}
    assert any(p.parent != tmp_path for p in written.values())


# ---- end to end against the mirror ----------------------------------------------------------------------


@pytest.fixture()
def served(mirror, mirror_settings):
    published.serve(mirror, COPY)
    return COPY


FIRST20 = COPY.songs[:20]
NO_PREVIEW = FIRST20[4].track_id


@pytest.fixture()
def previews(tmp_path: Path) -> Path:
    folder = tmp_path / "previews"
    published.write_previews(folder, COPY.songs, skip={NO_PREVIEW})
    return folder


CAPTIONS = {
    "Into the Sun": '"Into the Sun" by Ann Example, released in 1994, tagged rock, indie and female '
                    "vocalists.",
    "Night Drive": '"Night Drive" by The Examples, released in 2003, tagged electronic and synthpop.',
    "Café Naïve": '"Café Naïve" by Zoë Exemple, released in 1968, tagged chanson, french and female '
                  "vocalists.",
    "Unknown Year": '"Unknown Year" by Nobody Known, tagged lo-fi.',
    "Quiet Tags": '"Quiet Tags" by Soft Band, released in 2008.',
    "No Last.fm": '"No Last.fm" by Obscure Act, released in 1999.',
}
"""Captions of songs among the first 20 track ids: tags under 10 left out, year 0 unknown, no Last.fm file."""


def _expected_tags(song: published.Song) -> tuple[str, ...]:
    ranked = sorted(song.lastfm or (), key=lambda pair: (-pair[1], pair[0]))
    return tuple(dict.fromkeys(tag.lower() for tag, count in ranked if count >= 10))


def test_limited_ingest_with_a_preview_folder_then_a_second_run_does_nothing(
    served, mirror, mirror_settings, previews: Path, prefect_server: str
) -> None:
    root = str(mirror_settings.root)
    data_root = DataRoot(mirror_settings.root)
    options = {"audio_dir": str(previews)}
    catalog, acquire = stages.ingest("msd", options, limit=20, root=root)
    rows = read_manifest(data_root.manifest("msd"))
    assert [r.item_id for r in rows] == [make_item_id("msd", s.track_id) for s in FIRST20]
    for song, row in zip(FIRST20, rows, strict=True):
        assert row.split is None and (row.start_s, row.end_s) == (None, None)
        assert row.tags == _expected_tags(song)
        assert row.source == f"7digital:{song.track_7digitalid}"
        extra = row.extra_fields
        assert (extra["group"], extra["title"], extra["artist"]) == (song.song_id, song.title, song.artist)
        assert extra["audio_strategy"] == "folder" and str(previews) in extra["audio_provenance"]
        assert extra["lastfm"] == (None if song.lastfm is None else
                                   {tag: float(count) for tag, count in song.lastfm if count >= 10})
        assert len(row.captions) == 1 and row.captions[0].startswith(f'"{song.title}" by {song.artist}')
        assert ("released in" in row.captions[0]) == bool(song.year)
        assert ("tagged" in row.captions[0]) == bool(row.tags)
    captions = {row.extra_fields["title"]: row.captions[0] for row in rows}
    assert {title: captions[title] for title in CAPTIONS} == CAPTIONS

    assert (catalog.worked, acquire.ok, acquire.failures) == (20, 19, {"no_audio": 1})
    missing = read_status(data_root.status_dir("acquire", "msd"))[make_item_id("msd", NO_PREVIEW)]
    assert missing.failure_class == "permanent"
    assert str(previews) in missing.detail and f"{NO_PREVIEW}.mp3" in missing.detail
    assert "--force" in missing.detail
    extracted = sorted(p.name for p in data_root.raw_dir("msd").rglob("TR*.h5"))
    assert extracted == sorted(f"{s.track_id}.h5" for s in FIRST20)

    preprocess = stages.preprocess("msd", root=root)
    assert (preprocess.ok, preprocess.failed) == (19, 0)
    verify = stages.verify("msd", [], root)
    assert verify.failed == 0 and "verdict ok" in verify.extra
    info = sf.info(data_root.clip_path("msd", make_item_id("msd", FIRST20[0].track_id)))
    assert (info.samplerate, info.channels) == (44_100, 2)

    before = len(mirror.requests)
    again = stages.ingest("msd", options, limit=20, root=root)
    assert [s.worked for s in again] == [0, 0] and again[1].skipped_permanent == 1
    assert mirror.requests[before:] == []


def test_lastfm_tags_from_the_database_match_the_zip(served, mirror_settings, previews: Path) -> None:
    root = Path(mirror_settings.root)

    def rows(lastfm: str) -> list[ManifestRow]:
        options = {"audio_dir": str(previews), "lastfm": lastfm}
        return list(msd.catalog(SourceContext(DataRoot(root), mirror_settings, options, 8)))

    by_zip, by_db = rows("zip"), rows("db")
    assert [row.tags for row in by_zip] == [_expected_tags(song) for song in COPY.songs[:8]]
    assert [row.tags for row in by_db] == [row.tags for row in by_zip]
    assert all(row.tags == () and "tagged" not in row.captions[0] for row in rows("none"))


def test_a_second_catalog_takes_the_track_list_from_its_cache_not_from_the_archive(
    served, mirror_settings, previews: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = SourceContext(DataRoot(mirror_settings.root), mirror_settings, {"audio_dir": str(previews)}, 6)
    first = list(msd.catalog(ctx))
    listed = msd.list_members

    def list_members(archive: Path) -> list[str]:
        assert archive.name != published.SUBSET, "the subset was streamed again to list its members"
        return listed(archive)

    monkeypatch.setattr(msd, "list_members", list_members)
    assert list(msd.catalog(ctx)) == first


def test_a_damaged_lastfm_database_is_an_error_and_is_deleted(served, mirror, mirror_settings,
                                                             previews: Path) -> None:
    mirror.faults.corrupt[f"/lastfm/{published.LASTFM_DB}"] = b"<html>mirror error page</html>" * 50
    ctx = SourceContext(DataRoot(mirror_settings.root), mirror_settings,
                        {"audio_dir": str(previews), "lastfm": "db"}, 3)
    with pytest.raises(SourceError, match="not the Last.fm tags database"):
        list(msd.catalog(ctx))
    assert not (ctx.root.raw_dir("msd") / published.LASTFM_DB).exists()
    del mirror.faults.corrupt[f"/lastfm/{published.LASTFM_DB}"]
    assert [row.tags for row in msd.catalog(ctx)] == [_expected_tags(song) for song in COPY.songs[:3]]


def test_under_transient_faults_every_item_still_arrives_once(served, mirror, mirror_settings, previews: Path,
                                                              prefect_server: str) -> None:
    mirror.faults.rate = 0.3
    mirror.faults.script = ("drop", "500", "stall", "429")
    catalog, acquire = stages.ingest("msd", {"audio_dir": str(previews)}, root=str(mirror_settings.root))
    rows = read_manifest(DataRoot(mirror_settings.root).manifest("msd"))
    assert [r.item_id for r in rows] == [make_item_id("msd", s.track_id) for s in COPY.songs]
    assert (acquire.ok, acquire.failures) == (len(COPY.songs) - 1, {"no_audio": 1})
    assert mirror.faults.injected >= 4
    resumed = [e for e in mirror.requests_for(f"/msd/{published.SUBSET}") if e.headers.get("Range")]
    assert any(entry.status == 206 for entry in resumed)


def test_a_truncated_subset_is_an_error_and_is_deleted_so_the_next_run_downloads_it(
    served, mirror, mirror_settings, previews: Path
) -> None:
    mirror.faults.corrupt[f"/msd/{published.SUBSET}"] = COPY.subset[: len(COPY.subset) // 2]
    ctx = SourceContext(DataRoot(mirror_settings.root), mirror_settings, {"audio_dir": str(previews)}, 5)
    with pytest.raises(SourceError, match="ends early"):
        list(msd.catalog(ctx))
    raw = ctx.root.raw_dir("msd")
    assert not (raw / published.SUBSET).exists() and list(raw.rglob("*.h5")) == []
    del mirror.faults.corrupt[f"/msd/{published.SUBSET}"]
    assert len(list(msd.catalog(ctx))) == 5


def test_hostile_and_broken_track_files_are_catalog_records_and_the_rest_is_catalogued(
    mirror, mirror_settings, previews: Path
) -> None:
    copy = published.build(hostile=True)
    published.serve(mirror, copy)
    ctx = SourceContext(DataRoot(mirror_settings.root), mirror_settings, {"audio_dir": str(previews)})
    rows = list(msd.catalog(ctx))
    assert [r.item_id for r in rows] == [make_item_id("msd", s.track_id) for s in copy.songs]
    records = read_status(ctx.root.status_dir("catalog", "msd"))
    escape = records[make_item_id("msd", published.ESCAPE_TRACK)]
    garbage = records[make_item_id("msd", published.GARBAGE_TRACK)]
    assert (escape.reason, escape.failure_class) == ("unsafe_archive", "permanent")
    assert "'..'" in escape.detail
    assert garbage.reason == "unreadable_hdf5" and published.GARBAGE_TRACK in garbage.detail
    assert make_item_id("msd", published.LINK_TRACK) not in records
    for track_id in (published.LINK_TRACK, published.ESCAPE_TRACK):
        assert not list(ctx.root.path.rglob(f"{track_id}*"))
    assert not Path(f"/tmp/X/X/X/{published.ESCAPE_TRACK}.h5").exists()
    files = sorted(ctx.root.status_dir("catalog", "msd").iterdir())
    list(msd.catalog(ctx))
    assert sorted(ctx.root.status_dir("catalog", "msd").iterdir()) == files


def test_youtube_strategy_searches_artist_and_title_and_records_the_match_as_such(
    served, mirror, mirror_settings, prefect_server: str
) -> None:
    """The search goes to ``youtube_search_url`` (the mirror's search stand-in), under faults too; the
    query, the result parsing, the download of the found video and the provenance are the real code."""
    from mirror import Faults
    from published._youtube import REMOVED, timecode_webm

    songs = COPY.songs[:4]
    found = {youtube_query(song.artist, song.title): f"vid{index}-{song.track_id[-6:]}"
             for index, song in enumerate(songs)}
    found[youtube_query(songs[3].artist, songs[3].title)] = None
    for query, video_id in found.items():
        mirror.search(query, [video_id, "Zzzzzzzzzzz"] if video_id else [])
    for video_id in list(found.values())[:2]:
        mirror.media(video_id, timecode_webm())
    mirror.unavailable(found[youtube_query(songs[2].artist, songs[2].title)], REMOVED)
    mirror.faults = Faults(script=("503", "drop", None, "429"), paths=("/results", "/watch", "/media"))
    root = DataRoot(mirror_settings.root)
    _, acquire = stages.ingest("msd", {"audio": "youtube"}, limit=4, root=str(root.path))

    searched = [entry.path for entry in mirror.log if entry.path.startswith("/results") and entry.fault is None]
    assert [unquote_plus(path.partition("=")[2]) for path in searched] == [f"{s.artist} {s.title}" for s in songs]
    assert mirror.faults.injected == 4
    assert (acquire.ok, acquire.failures) == (2, {"video_removed": 1, "no_search_result": 1})
    rows = {row.item_id: row for row in read_manifest(root.manifest("msd"))}
    records = read_status(root.status_dir("acquire", "msd"))
    for song in songs[:2]:
        item_id = make_item_id("msd", song.track_id)
        query = f"{song.artist} {song.title}"
        assert rows[item_id].source == f"ytsearch1:{query}"
        provenance = rows[item_id].extra_fields["audio_provenance"]
        assert "a search match, not the original 7digital preview" in provenance
        assert records[item_id].detail == f"youtube-search: {query} → {found[query]}"
        audio = root.path / records[item_id].output
        assert audio == msd.audio_path(rows[item_id], root) and audio.suffix == ".webm"
        sidecar = json.loads((audio.parent / f"{song.track_id}.provenance.json").read_text())
        assert (sidecar["query"], sidecar["video_id"]) == (query, found[query])
    assert records[make_item_id("msd", songs[3].track_id)].failure_class == "permanent"

    preprocess = stages.preprocess("msd", root=str(root.path))
    assert (preprocess.ok, preprocess.failed) == (2, 0)
    clip = sf.info(root.clip_path("msd", make_item_id("msd", songs[0].track_id)))
    assert clip.samplerate == 44_100 and clip.duration == pytest.approx(msd.YOUTUBE_SECONDS, abs=0.1)
