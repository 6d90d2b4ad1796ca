"""MagnaTagATune: the TSV parsers on the published files' traps, then ingestion end to end against a copy in
the published layout on the loopback mirror (split zip, the three empty mp3s, faults, bad parts, a hostile
member)."""

from __future__ import annotations

import pytest
import soundfile as sf
from published import magnatagatune as published

from downloaders import magnatagatune
from downloaders.base import SourceContext, SourceError
from downloaders.formats.magnatagatune import (
    FormatError,
    decode,
    read_annotations,
    read_clip_info,
    song_of,
    split_of,
)
from flows import stages
from store.layout import DataRoot, make_item_id
from store.manifest import read_manifest
from store.settings import load_settings
from store.splits import canonical_split
from store.status import read_status

HEADER = "clip_id\tno voice\tHard Rock\tfemale  vocal\tmp3_path\n"
PATH = "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3"


def test_published_annotations_are_tab_separated_and_quoted_with_188_tags() -> None:
    copy = published.build()
    text = decode(copy.files["annotations_final.csv"])
    assert text.splitlines()[0].count("\t") == 189 and text.startswith('"clip_id"\t"no voice"')
    clips, rejected = read_annotations(text)
    assert rejected == []
    assert [c.clip_id for c in clips] == [c.clip_id for c in copy.clips]
    for clip, expected in zip(clips, copy.clips, strict=True):
        assert clip.tags == expected.tags
        assert clip.mp3_path == expected.mp3_path


def test_tags_are_the_columns_holding_1_with_cleaned_names_quoted_or_not() -> None:
    quoted = ('"clip_id"\t"no voice"\t"Hard Rock"\t"female  vocal"\t"mp3_path"\n'
              f'"2"\t"1"\t"0"\t"1"\t"{PATH}"\n')
    plain = HEADER + f"2\t1\t0\t1\t{PATH}\r\n"
    for text in (quoted, plain):
        clips, rejected = read_annotations(text)
        assert rejected == []
        assert [(c.clip_id, c.tags, c.mp3_path) for c in clips] == [("2", ("no voice", "female vocal"), PATH)]


def test_a_comma_separated_file_is_refused_as_a_whole() -> None:
    with pytest.raises(FormatError, match="TAB-separated header"):
        read_annotations("clip_id,no voice,mp3_path\n2,1,0/a-b-01-c-0-29.mp3\n")
    with pytest.raises(FormatError, match="clip_id"):
        read_clip_info("id\ttitle\n")


def test_unusable_annotation_lines_are_rejected_with_line_and_reason_and_the_rest_kept() -> None:
    text = HEADER + "\n".join([
        f"2\t1\t0\t0\t{PATH}",
        f"6\t1\t0\t{PATH}",                                   # a field short
        f"x7\t0\t0\t0\t{PATH}",                               # clip id not a number
        f"2\t0\t0\t0\t{PATH}",                                # clip id repeated
        f"9\t0\t2\t0\t{PATH}",                                # tag value not 0/1
        "10\t0\t0\t0\t../../etc/passwd.mp3",                  # path escapes the folder
        "11\t0\t0\t0\tg/not-a-hex-folder-0-29.mp3",           # folder outside 0-f
        "12\t0\t0\t0\t",                                      # no path (a clip cut_clips failed to make)
        "13\t0\t1\t0\t0/jeff_wahl-guitarscapes-03-spirit-0-29.mp3",
    ]) + "\n"
    clips, rejected = read_annotations(text)
    assert [c.clip_id for c in clips] == ["2", "13"]
    assert [(r.key, r.reason) for r in rejected] == [
        ("annotations_final.csv#3", "malformed_row"),
        ("annotations_final.csv#4", "bad_clip_id"),
        ("annotations_final.csv#5", "duplicate_clip_id"),
        ("9", "bad_tag_value"),
        ("10", "bad_mp3_path"),
        ("11", "bad_mp3_path"),
        ("12", "bad_mp3_path"),
    ]
    assert rejected[0].detail == ("annotations_final.csv line 3 has 4 fields, the header 5; "
                                  "fetch the file again")
    assert "'../../etc/passwd.mp3'" in rejected[4].detail


def test_a_stray_latin1_byte_does_not_lose_the_file() -> None:
    data = "clip_id\ttitle\tartist\n2\tCaf\xe9\tZo\xeb\n".encode("latin-1")
    info, unusable = read_clip_info(decode(data))
    assert unusable == 0
    assert info["2"] == {"title": "Café", "artist": "Zoë"}


def test_clip_info_columns_are_found_by_name_and_bad_lines_only_counted() -> None:
    text = ("mp3_path\tartist\tclip_id\talbum\ttrack_number\ttitle\n"
            f"{PATH}\tAmerican Bach Soloists\t2\tJ.S. Bach Solo Cantatas\t1\tBWV54\n"
            "short\tline\n"
            f"{PATH}\tSomeone\t2\tAgain\t3\tRepeated id\n")
    info, unusable = read_clip_info(text)
    assert unusable == 2
    assert info == {"2": {"artist": "American Bach Soloists", "album": "J.S. Bach Solo Cantatas",
                          "track_number": "1", "title": "BWV54"}}


def test_folder_split_and_song_groups() -> None:
    assert [split_of(f"{folder}/x-0-29.mp3") for folder in "0123456789abcdef"] == \
        ["train"] * 12 + ["valid"] + ["test"] * 3
    first = {"artist": "Norine Braun", "album": "Now And Zen", "track_number": "8", "title": "Gently"}
    song = "6/norine_braun-now_and_zen-08-gently"
    assert song_of(f"{song}-88-117.mp3", first) == "Norine Braun / Now And Zen / 8"
    assert song_of(f"{song}-117-146.mp3", None) == "norine_braun-now_and_zen-08-gently"


def test_part_sizes_option(tmp_path) -> None:
    def sizes(value: str | None) -> tuple[int, ...] | None:
        options = {} if value is None else {"part_sizes": value}
        return magnatagatune._part_sizes(SourceContext(DataRoot(tmp_path), load_settings(), options))

    assert sizes(None) == (1_100_000_000, 1_100_000_000, 772_769_864)
    assert sizes("10,20,30") == (10, 20, 30)
    assert sizes("any") is None
    for bad in ("10,20", "a,b,c", "10,0,5"):
        with pytest.raises(SourceError, match="three positive byte counts"):
            sizes(bad)


# ---- end to end against the mirror ----------------------------------------------------------------------


@pytest.fixture()
def served(mirror, mirror_settings):
    copy = published.build()
    published.serve(mirror, copy)
    return copy


def test_the_split_option_catalogs_one_split_in_clip_id_order(served, mirror_settings) -> None:
    def rows(**options: str) -> list:
        ctx = SourceContext(DataRoot(mirror_settings.root), mirror_settings, {**served.options, **options}, 2)
        return list(magnatagatune.catalog(ctx))

    valid = [clip.clip_id for clip in served.clips if clip.split == "valid"][:2]
    assert [row.item_id for row in rows(split="valid")] == [make_item_id("magnatagatune", i) for i in valid]
    with pytest.raises(SourceError, match="the splits are train, valid, test"):
        rows(split="validation")


def test_an_error_page_saved_as_the_annotations_is_an_error_and_is_deleted(served, mirror, mirror_settings):
    path = "/magnatagatune/annotations_final.csv"
    mirror.faults.corrupt[path] = b"<html><body>Service Unavailable</body></html>"
    ctx = SourceContext(DataRoot(mirror_settings.root), mirror_settings, served.options, 3)
    with pytest.raises(SourceError, match="TAB-separated header.*deleted"):
        list(magnatagatune.catalog(ctx))
    assert not (ctx.root.raw_dir("magnatagatune") / "annotations_final.csv").exists()
    del mirror.faults.corrupt[path]
    assert len(list(magnatagatune.catalog(ctx))) == 3


def _ingest(copy: published.PublishedMTT, root: str, limit: int | None = 20) -> list[stages.StageSummary]:
    return stages.ingest(magnatagatune.DATASET, copy.options, limit=limit, root=root)


def _parts_requested(mirror) -> list[str]:
    return [path for method, path, _ in mirror.requests if method == "GET" and ".zip.0" in path]


def test_limited_ingest_catalogs_extracts_only_its_members_and_a_second_run_does_nothing(
    served, mirror, mirror_settings, prefect_server: str
) -> None:
    root = str(mirror_settings.root)
    data_root = DataRoot(mirror_settings.root)
    catalog, acquire = _ingest(served, root)
    first20 = served.clips[:20]
    rows = read_manifest(data_root.manifest("magnatagatune"))
    assert [r.item_id for r in rows] == [make_item_id("magnatagatune", c.clip_id) for c in first20]
    by_id = {r.item_id: r for r in rows}
    for clip in first20:
        row = by_id[make_item_id("magnatagatune", clip.clip_id)]
        assert (row.split, row.tags, row.source, row.captions) == (canonical_split(clip.split), clip.tags,
                                                                   clip.mp3_path, ())
        song = f"{clip.artist} / {clip.album} / {clip.track_number}"
        assert (row.group, row.held_out) == (f"magnatagatune:{song}", row.split == "test")
        assert (row.start_s, row.end_s, row.license) == (None, None, "CC-BY-NC-SA-3.0")
        extra = row.extra_fields
        assert (extra["title"], extra["artist"], extra["album"]) == (clip.title, clip.artist, clip.album)
        assert extra["group"] == song
    bach = {by_id[make_item_id("magnatagatune", i)].extra_fields["group"] for i in ("2", "6", "10")}
    assert len(bach) == 1
    assert {r.split for r in rows} == {"train", "val", "test"}

    assert (catalog.worked, acquire.ok, acquire.failed) == (20, 19, 1)
    records = read_status(data_root.status_dir("acquire", "magnatagatune"))
    empty = records[make_item_id("magnatagatune", "35644")]
    assert (empty.reason, empty.failure_class) == ("empty_audio", "permanent")
    assert "known to be empty" in empty.detail
    extracted = sorted(p.relative_to(data_root.raw_dir("magnatagatune") / "mp3").as_posix()
                       for p in (data_root.raw_dir("magnatagatune") / "mp3").rglob("*.mp3"))
    assert extracted == sorted(c.mp3_path for c in first20)
    for clip in first20:
        if not clip.empty:
            path = data_root.raw_dir("magnatagatune") / "mp3" / clip.mp3_path
            assert path.read_bytes() == served.members[clip.mp3_path]
    assert sorted(_parts_requested(mirror)) == ["/magnatagatune/mp3.zip.001", "/magnatagatune/mp3.zip.002",
                                                "/magnatagatune/mp3.zip.003"]

    preprocess = stages.preprocess("magnatagatune", root=root)
    assert (preprocess.ok, preprocess.failed) == (19, 0)
    verify = stages.verify("magnatagatune", [], root)
    assert verify.failed == 0 and "verdict ok" in verify.extra
    clip_file = data_root.clip_path("magnatagatune", make_item_id("magnatagatune", "2"))
    info = sf.info(clip_file)
    assert (info.samplerate, info.channels) == (44_100, 1)
    assert info.duration == pytest.approx(served.clip("2").seconds, abs=0.1)

    before = len(mirror.requests)
    again = _ingest(served, root)
    assert [s.worked for s in again] == [0, 0]
    assert again[1].skipped_permanent == 1
    assert mirror.requests[before:] == []


def test_under_transient_faults_every_item_still_arrives_once(served, mirror, mirror_settings,
                                                              prefect_server: str) -> None:
    mirror.faults.rate = 0.3
    mirror.faults.script = ("drop", "500", "stall", "429")
    root = str(mirror_settings.root)
    catalog, acquire = _ingest(served, root, limit=None)
    assert catalog.worked == len(served.clips)
    rows = read_manifest(DataRoot(mirror_settings.root).manifest("magnatagatune"))
    expected = sorted(make_item_id("magnatagatune", clip.clip_id) for clip in served.clips)
    assert sorted(row.item_id for row in rows) == expected
    assert len({r.item_id for r in rows}) == len(rows)
    assert (acquire.ok, acquire.failed, acquire.failures) == (len(served.clips) - 3, 3, {"empty_audio": 3})
    assert mirror.faults.injected >= 4


def test_a_truncated_part_is_a_size_mismatch_for_every_item_and_leaves_no_zip(
    served, mirror, mirror_settings, prefect_server: str
) -> None:
    mirror.faults.corrupt["/magnatagatune/mp3.zip.003"] = served.files["mp3.zip.003"][:-500]
    root = str(mirror_settings.root)
    _, acquire = _ingest(served, root)
    assert (acquire.ok, acquire.failures) == (0, {"size_mismatch": 20})
    raw = DataRoot(mirror_settings.root).raw_dir("magnatagatune")
    assert not (raw / "mp3.zip").exists() and not (raw / "mp3.zip.003").exists()
    assert not (raw / "mp3").exists() or list((raw / "mp3").rglob("*")) == []
    records = read_status(DataRoot(mirror_settings.root).status_dir("acquire", "magnatagatune"))
    record = records["magnatagatune:2"]
    assert record.failure_class == "transient" and "mp3.zip.003" in record.detail

    del mirror.faults.corrupt["/magnatagatune/mp3.zip.003"]
    _, acquire = _ingest(served, root)
    assert (acquire.ok, acquire.failures) == (19, {"empty_audio": 1})


def test_a_damaged_part_of_the_right_size_deletes_every_part_so_the_next_run_starts_over(
    served, mirror, mirror_settings, prefect_server: str
) -> None:
    last = served.files["mp3.zip.003"]
    mirror.faults.corrupt["/magnatagatune/mp3.zip.003"] = last[:-200] + bytes(200)
    root = str(mirror_settings.root)
    _, acquire = _ingest(served, root)
    assert acquire.ok == 0 and sum(acquire.failures.values()) == 20
    assert set(acquire.failures) <= {"truncated_archive", "corrupt_archive"}
    raw = DataRoot(mirror_settings.root).raw_dir("magnatagatune")
    assert sorted(p.name for p in raw.iterdir() if p.name.startswith("mp3.zip")) == []

    del mirror.faults.corrupt["/magnatagatune/mp3.zip.003"]
    _, acquire = _ingest(served, root)
    assert (acquire.ok, acquire.failures) == (19, {"empty_audio": 1})


def test_a_member_that_is_a_symlink_is_refused_and_only_its_item_fails(mirror, mirror_settings,
                                                                        prefect_server: str) -> None:
    copy = published.build(hostile=True)
    published.serve(mirror, copy)
    root = str(mirror_settings.root)
    _, acquire = _ingest(copy, root, limit=None)
    records = read_status(DataRoot(mirror_settings.root).status_dir("acquire", "magnatagatune"))
    hostile = records[make_item_id("magnatagatune", published.HOSTILE_ID)]
    assert (hostile.reason, hostile.failure_class) == ("unsafe_archive", "permanent")
    assert acquire.ok == len(copy.clips) - 4
    raw = DataRoot(mirror_settings.root).raw_dir("magnatagatune")
    evil = raw / "mp3" / copy.clip(published.HOSTILE_ID).mp3_path
    assert not evil.exists() and not evil.is_symlink()


def test_a_bad_annotation_line_is_a_catalog_record_not_an_abort(mirror, mirror_settings,
                                                                prefect_server: str) -> None:
    copy = published.build()
    lines = copy.files["annotations_final.csv"].decode().splitlines(keepends=True)
    lines.insert(3, '"99"\t"1"\t"../../escape.mp3"\n')
    copy.files["annotations_final.csv"] = "".join(lines).encode()
    published.serve(mirror, copy)
    root = str(mirror_settings.root)
    catalog, _ = _ingest(copy, root, limit=5)
    assert catalog.worked == 5
    records = read_status(DataRoot(mirror_settings.root).status_dir("catalog", "magnatagatune"))
    bad = records["magnatagatune:annotations_final.csv#4"]
    assert (bad.outcome, bad.reason) == ("failed", "malformed_row")
    files = sorted(DataRoot(mirror_settings.root).status_dir("catalog", "magnatagatune").iterdir())
    _ingest(copy, root, limit=5)
    assert sorted(DataRoot(mirror_settings.root).status_dir("catalog", "magnatagatune").iterdir()) == files
