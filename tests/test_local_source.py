"""The ``local`` source over a real folder of good, bad and odd audio files with CSV or JSONL captions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from audio_files import (
    captions_for,
    stereo_tone,
    tags_for,
    write_audio_folder,
    write_captions_csv,
    write_captions_jsonl,
)

from downloaders import get_source
from downloaders.base import SourceContext, SourceError
from processors.clip import write_clip
from processors.errors import AudioError
from store.layout import DataRoot
from store.settings import Settings
from store.status import FailureClass, Outcome, read_status

SOURCE = get_source("local")
SHORT_WINDOWS = Settings(clip_s=2.0, clip_hop_s=2.0, min_clip_s=0.5)


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory: pytest.TempPathFactory):
    """One shared folder of every fixture; tests that change a folder copy it first."""
    folder = tmp_path_factory.mktemp("music")
    return folder, write_audio_folder(folder)


@pytest.fixture
def folder_copy(audio_folder, tmp_path):
    folder, fixtures = audio_folder
    copy = tmp_path / "music"
    shutil.copytree(folder, copy)
    return copy, {name: fixture.path.name for name, fixture in fixtures.items()}


def context(
    tmp_path: Path, folder: Path, settings: Settings = SHORT_WINDOWS, **options: str
) -> SourceContext:
    return SourceContext(DataRoot(tmp_path / "data"), settings, {"path": str(folder), **options})


def catalog_status(ctx: SourceContext) -> dict:
    return read_status(ctx.root.status_dir("catalog", "local"))


@pytest.mark.parametrize("writer, name", [(write_captions_csv, "c.csv"), (write_captions_jsonl, "c.jsonl")])
def test_catalog_reads_captions_and_windows_long_files(audio_folder, writer, name, tmp_path):
    folder, fixtures = audio_folder
    captions = writer(folder, fixtures, tmp_path / name)
    ctx = context(tmp_path, folder, captions=str(captions.path))

    rows = SOURCE.catalog(ctx)

    by_source: dict[str, list] = {}
    for row in rows:
        by_source.setdefault(row.source, []).append(row)
    assert sorted(by_source) == sorted(fixture.path.name for fixture in fixtures.values())
    for name, fixture in fixtures.items():
        file_rows = by_source[fixture.path.name]
        for row in file_rows:
            assert row.dataset == "local"
            assert row.captions == captions_for(name)
            assert row.tags == tags_for(name)
            assert json.loads(row.extra)["root"] == str(folder)
            assert SOURCE.audio_path(row, ctx.root) == fixture.path
    long_rows = by_source["long_wav.wav"]
    assert [(r.item_id, r.start_s, r.end_s) for r in long_rows] == [
        ("local:long_wav.wav@0", 0.0, 2.0),
        ("local:long_wav.wav@2", 2.0, 4.0),
        ("local:long_wav.wav@4", 4.0, 5.0),
    ]
    assert [(r.item_id, r.start_s, r.end_s) for r in by_source["mp3.mp3"]] == [("local:mp3.mp3", None, None)]
    assert [(r.item_id, r.start_s) for r in by_source["corrupt.wav"]] == [("local:corrupt.wav", None)], (
        "a file whose duration cannot be read still gets a row, so preprocessing records why"
    )

    status = catalog_status(ctx)
    expected = {f"local:{captions.path.name}#{line}": reason for line, reason in captions.rejected.items()}
    assert {item_id: record.reason for item_id, record in status.items()} == expected
    assert all(record.outcome == Outcome.FAILED for record in status.values())
    assert all(f"line {item_id.rsplit('#')[1]}" in record.detail for item_id, record in status.items())


def test_csv_split_column_and_cleaning(audio_folder, tmp_path):
    folder, fixtures = audio_folder
    captions = write_captions_csv(folder, fixtures, tmp_path / "captions.csv")
    rows = SOURCE.catalog(context(tmp_path, folder, captions=str(captions.path)))
    assert {row.split for row in rows} == {"train"}
    assert "\n" in captions.path.read_text(), "the fixture spreads a caption over two lines"
    assert all("\n" not in caption and "  " not in caption for row in rows for caption in row.captions)


def test_default_captions_file_and_unlisted_audio(folder_copy, tmp_path):
    folder, names = folder_copy
    listed = [f'{path},Caption of {name},"Rock, Live"' for name, path in names.items() if name != "mp3"]
    lines = ["path,caption,tags", *listed]
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    (folder / "notes.txt").write_text("not audio")
    (folder / ".hidden.wav").write_bytes(b"")
    (folder / "sub").mkdir()
    sf.write(folder / "sub" / "deeper.flac", stereo_tone(1.5, 44_100), 44_100)

    rows = {row.source: row for row in SOURCE.catalog(context(tmp_path, folder, Settings()))}

    assert set(rows) == set(names.values()) | {"sub/deeper.flac"}
    assert rows["mp3.mp3"].captions == () and rows["mp3.mp3"].tags == ()
    assert rows["sub/deeper.flac"].item_id == "local:sub/deeper.flac"
    assert rows["wav_stereo.wav"].captions == ("Caption of wav_stereo",)
    assert rows["wav_stereo.wav"].tags == ("rock", "live")


def test_folder_without_captions_catalogues_every_audio_file(folder_copy, tmp_path):
    folder, names = folder_copy
    rows = SOURCE.catalog(context(tmp_path, folder, Settings()))
    assert sorted(row.source for row in rows) == sorted(names.values())
    assert all(row.captions == () for row in rows)
    assert catalog_status(context(tmp_path, folder)) == {}


def test_data_root_inside_the_folder_is_not_catalogued(folder_copy, tmp_path):
    folder, names = folder_copy
    ctx = SourceContext(DataRoot(folder / "data"), Settings(), {"path": str(folder)})
    clip = ctx.root.clip_path("local", "local:wav_stereo.wav")
    clip.parent.mkdir(parents=True)
    sf.write(clip, stereo_tone(1, 44_100), 44_100)
    assert sorted(row.source for row in SOURCE.catalog(ctx)) == sorted(names.values())


def test_duplicate_rows_merge_and_absolute_paths_inside_are_accepted(folder_copy, tmp_path):
    folder, _ = folder_copy
    records = [
        {"path": "wav_stereo.wav", "caption": "Bright tone", "tags": "a;b"},
        {"path": str(folder / "wav_stereo.wav"), "captions": ["Bright tone", "Second view"],
         "tags": ["B", "c"], "split": "test"},
        {"path": "./sub/../mp3.mp3", "caption": "normalised path"},
    ]
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = {row.source: row for row in SOURCE.catalog(context(tmp_path, folder, Settings()))}
    assert rows["wav_stereo.wav"].captions == ("Bright tone", "Second view")
    assert rows["wav_stereo.wav"].tags == ("a", "b", "c")
    assert rows["wav_stereo.wav"].split == "test"
    assert rows["mp3.mp3"].captions == ("normalised path",)


def test_rerun_records_nothing_new_and_fixed_rows_are_resolved(folder_copy, tmp_path):
    folder, names = folder_copy
    good = [f'{{"path": "{path}", "caption": "ok"}}' for path in names.values()]
    captions = folder / "captions.jsonl"
    captions.write_text("\n".join([*good, "{broken", '{"path": "../../etc/passwd"}']) + "\n")
    ctx = context(tmp_path, folder)
    status_dir = ctx.root.status_dir("catalog", "local")

    SOURCE.catalog(ctx)
    SOURCE.catalog(ctx)
    assert len(list(status_dir.glob("unit-*.parquet"))) == 1, "an unchanged captions file writes nothing"
    first_bad = len(good) + 1
    bad_lines = {
        f"local:captions.jsonl#{first_bad}": "bad_json",
        f"local:captions.jsonl#{first_bad + 1}": "path_outside_folder",
    }
    assert {item: record.reason for item, record in catalog_status(ctx).items()} == bad_lines

    captions.write_text("\n".join(good) + "\n")
    SOURCE.catalog(ctx)
    status = catalog_status(ctx)
    assert set(status) == set(bad_lines)
    assert all(record.is_ok for record in status.values())


def test_limit_counts_files(audio_folder, tmp_path):
    folder, _ = audio_folder
    ctx = SourceContext(DataRoot(tmp_path / "data"), SHORT_WINDOWS, {"path": str(folder)}, limit=2)
    rows = SOURCE.catalog(ctx)
    assert sorted({row.source for row in rows}) == ["corrupt.wav", "empty.wav"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "option 'path' is required"),
        ({"path": "absent"}, "is not a folder"),
        ({"path": "music", "captions": "absent.csv"}, "does not exist"),
        ({"path": "music", "captions": "captions.txt"}, "must be a .csv or .jsonl"),
        ({"path": "music", "captions": "nopath.csv"}, "must name a 'path' column"),
    ],
)
def test_whole_source_problems_raise_source_error(tmp_path, options, message):
    """Options name files in ``tmp_path``: an empty ``music`` folder and two bad captions files."""
    (tmp_path / "music").mkdir()
    (tmp_path / "captions.txt").write_text("path,caption\n")
    (tmp_path / "nopath.csv").write_text("file,caption\nx.wav,hello\n")
    resolved = {key: str(tmp_path / value) for key, value in options.items()}
    with pytest.raises(SourceError, match=message):
        SOURCE.catalog(SourceContext(DataRoot(tmp_path / "data"), Settings(), resolved))


def test_two_default_captions_files_are_ambiguous(folder_copy, tmp_path):
    folder, _ = folder_copy
    (folder / "captions.csv").write_text("path,caption\n")
    (folder / "captions.jsonl").write_text("")
    with pytest.raises(SourceError, match="both captions.csv and captions.jsonl"):
        SOURCE.catalog(context(tmp_path, folder))


def test_acquire_checks_files_without_copying(folder_copy, tmp_path):
    folder, _ = folder_copy
    ctx = context(tmp_path, folder, Settings())
    rows = SOURCE.catalog(ctx)
    (folder / "mp3.mp3").unlink()

    records = {record.item_id: record for record in SOURCE.acquire(rows, ctx)}

    assert set(records) == {row.item_id for row in rows}
    missing = records["local:mp3.mp3"]
    assert (missing.outcome, missing.reason, missing.failure_class) == ("failed", "missing_file", "permanent")
    assert str(folder / "mp3.mp3") in missing.detail
    assert records["local:wav_stereo.wav"].is_ok
    assert records["local:wav_stereo.wav"].output == str(folder / "wav_stereo.wav")
    assert not (ctx.root.path / "raw").exists()


def test_every_good_file_becomes_a_clip_and_every_bad_one_has_a_reason(audio_folder, tmp_path):
    """The issue's acceptance case at the processor level: catalog → acquire → clip, nothing aborts."""
    folder, fixtures = audio_folder
    captions = write_captions_csv(folder, fixtures, tmp_path / "captions.csv")
    ctx = context(tmp_path, folder, Settings(), captions=str(captions.path))
    rows = SOURCE.catalog(ctx)
    assert all(record.is_ok for record in SOURCE.acquire(rows, ctx))

    outcomes = {}
    for row in rows:
        target = ctx.root.clip_path("local", row.item_id)
        try:
            write_clip(SOURCE.audio_path(row, ctx.root), target, start_s=row.start_s, end_s=row.end_s,
                       settings=ctx.settings)
            outcomes[row.source] = None
        except AudioError as error:
            assert error.failure_class == FailureClass.PERMANENT
            assert row.source in error.detail
            outcomes[row.source] = error.reason

    assert outcomes == {fixture.path.name: fixture.reason for fixture in fixtures.values()}
    clips = sorted(path.name for path in ctx.root.clip_dir("local").iterdir())
    assert clips == sorted(f"{fixture.path.name}.flac" for fixture in fixtures.values() if fixture.ok)


# ---- broken captions files: each bad row costs itself, with the line it starts on ---------------------------

LONG = "x" * (200 << 10)
"""A caption over csv's 128 KiB field limit."""


def _rows_and_failures(ctx: SourceContext) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, str]]]:
    rows = {row.source: row.captions for row in SOURCE.catalog(ctx)}
    failures = {item: (record.reason, record.detail) for item, record in catalog_status(ctx).items()}
    return rows, failures


def test_bytes_that_are_not_utf8_cost_their_own_csv_row(folder_copy, tmp_path):
    folder, names = folder_copy
    wav, flac, mp3 = names["wav_stereo"], names["flac_chord"], names["mp3"]
    (folder / "captions.csv").write_bytes(
        b"path,caption\n"
        + f"{wav},Fine\n".encode()
        + f"{flac},Caf\xe9 in Latin-1\n".encode("latin-1")
        + f'{mp3},"Two lines,\n'.encode() + b'the second caf\xe9"\n'
        + f"{names['ogg_vorbis']},After them\n".encode()
    )

    rows, failures = _rows_and_failures(context(tmp_path, folder, Settings()))

    assert failures == {
        "local:captions.csv#3": ("bad_encoding", "captions.csv line 3: byte 0xE9 (column "
                                 f"{len(flac) + 5}) is not UTF-8; the file was probably saved as Latin-1 or "
                                 "Windows-1252: save it as UTF-8"),
        "local:captions.csv#4": ("bad_encoding", failures["local:captions.csv#4"][1]),
    }
    assert "(line 5, column 15)" in failures["local:captions.csv#4"][1]
    assert rows[wav] == ("Fine",) and rows[names["ogg_vorbis"]] == ("After them",)
    assert rows[flac] == () and rows[mp3] == (), "their files are still catalogued, without the bad rows"


def test_bytes_that_are_not_utf8_cost_their_own_jsonl_line(folder_copy, tmp_path):
    folder, names = folder_copy
    lines = [json.dumps({"path": names["wav_stereo"], "caption": "Fine"}).encode(),
             b'{"path": "' + names["flac_chord"].encode() + b'", "caption": "Caf\xe9"}',
             json.dumps({"path": names["ogg_vorbis"], "caption": "After"}).encode()]
    (folder / "captions.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")

    rows, failures = _rows_and_failures(context(tmp_path, folder, Settings()))

    assert list(failures) == ["local:captions.jsonl#2"]
    assert failures["local:captions.jsonl#2"][0] == "bad_encoding"
    assert "byte 0xE9 (column " in failures["local:captions.jsonl#2"][1]
    assert rows[names["wav_stereo"]] == ("Fine",) and rows[names["ogg_vorbis"]] == ("After",)


def test_a_csv_caption_over_128_kib_costs_its_row_named_by_its_first_line(folder_copy, tmp_path):
    """One too long on a line of its own, one quoted over four lines: each is one failure at the line it
    starts on, and the lines inside the second are not read as rows of their own."""
    folder, names = folder_copy
    wav, flac, mp3, ogg = names["wav_stereo"], names["flac_chord"], names["mp3"], names["ogg_vorbis"]
    half = LONG[: len(LONG) // 2]
    (folder / "captions.csv").write_text(
        "path,caption\n"
        f"{wav},Before\n"
        f"{flac},{LONG}\n"
        f"{mp3},Between\n"
        f'{ogg},"{half}\n{half}\nnot.wav,a row inside the quotes\n""quoted"" end"\n'
        f"{names['wav_8bit']},After\n"
    )

    rows, failures = _rows_and_failures(context(tmp_path, folder, Settings()))

    assert {item: reason for item, (reason, _) in failures.items()} == {
        "local:captions.csv#3": "field_too_long", "local:captions.csv#5": "field_too_long"}
    assert "longer than 131,072 characters: " in failures["local:captions.csv#3"][1]
    assert "(the row runs to line 6)" in failures["local:captions.csv#5"][1]
    assert rows[wav] == ("Before",) and rows[mp3] == ("Between",) and rows[names["wav_8bit"]] == ("After",)
    assert "not.wav" not in rows
