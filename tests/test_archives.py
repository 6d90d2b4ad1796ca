"""Archive extraction on real tar and zip files, good and hostile."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from downloaders.transports.archives import Limits, extract, join_parts, list_members, read_member
from downloaders.transports.errors import ArchiveError, DownloadError
from store.status import FailureClass

CAP = 1 << 20
LIMITS = Limits(member_bytes=CAP, archive_bytes=1 << 30, ratio=100)


def content(name: str, size: int = 20_000) -> bytes:
    seed = sum(name.encode())
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


GOOD = {"fma_small/000/000002.mp3": content("a"), "fma_small/000/000005.mp3": content("b", 30_000),
        "fma_small/011/011638.mp3": content("c", 1), "fma_small/checksums": b"abc  000/000002.mp3\n"}


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", link: str = "",
              size: int | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if size is None else size
    return info, data


def write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def good_tar(path: Path, mode: str = "w:gz") -> Path:
    return write_tar(path, [tar_entry(name, data=data) for name, data in GOOD.items()], mode)


def write_zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_BZIP2,
              links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_of_every_compression_extracts(tmp_path: Path, mode: str) -> None:
    archive = good_tar(tmp_path / "fma_small.tar.x", mode)

    paths = extract(archive, tmp_path / "out", limits=LIMITS)

    assert tree(tmp_path / "out") == GOOD
    assert paths == [tmp_path / "out" / name for name in GOOD]


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_zip_of_every_compression_extracts_with_components_stripped(tmp_path: Path, compression: int) -> None:
    archive = write_zip(tmp_path / "fma_small.zip", GOOD, compression)

    paths = extract(archive, tmp_path / "out", limits=LIMITS, strip_components=1)

    assert tree(tmp_path / "out") == {name.split("/", 1)[1]: data for name, data in GOOD.items()}
    assert tmp_path / "out" / "000" / "000002.mp3" in paths


def test_only_the_members_asked_for_are_extracted_and_a_tar_is_read_no_further(tmp_path: Path) -> None:
    entries = [tar_entry(f"48/{n}.mp3", data=content(str(n))) for n in range(40)]
    whole = good_tar(tmp_path / "whole.tar.gz")
    write_tar(whole, entries)
    cut = tmp_path / "raw_30s_audio-48.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    paths = extract(cut, tmp_path / "out", members=["48/1.mp3", "./48/3.mp3"], limits=LIMITS)

    assert paths == [tmp_path / "out/48/1.mp3", tmp_path / "out/48/3.mp3"]
    assert tree(tmp_path / "out") == {"48/1.mp3": content("1"), "48/3.mp3": content("3")}
    with pytest.raises(DownloadError) as failed:
        extract(cut, tmp_path / "all", limits=LIMITS)
    assert failed.value.reason == "truncated_archive"


def test_hostile_tar_members_are_refused_by_name_and_the_good_ones_extract(tmp_path: Path) -> None:
    hostile = {
        "/tmp/absolute.txt": tar_entry("/tmp/absolute.txt", data=b"x"),
        "../dotdot.txt": tar_entry("../dotdot.txt", data=b"x"),
        "fma_small/../../deep.txt": tar_entry("fma_small/../../deep.txt", data=b"x"),
        "etc-link": tar_entry("etc-link", tarfile.SYMTYPE, link="/etc"),
        "up-link": tar_entry("up-link", tarfile.SYMTYPE, link="../.."),
        "fma_small/here/back": tar_entry("fma_small/here/back", tarfile.SYMTYPE, link="../../../outside"),
        "hard": tar_entry("hard", tarfile.LNKTYPE, link="../../etc/passwd"),
        "tty": tar_entry("tty", tarfile.CHRTYPE),
        "huge.bin": tar_entry("huge.bin", data=content("h", CAP + 1)),
    }
    inside = {"fma_small/same-dir": tar_entry("fma_small/same-dir", tarfile.SYMTYPE, link="000"),
              "fma_small/copy.mp3": tar_entry("fma_small/copy.mp3", tarfile.LNKTYPE,
                                              link="fma_small/000/000002.mp3")}
    entries = [tar_entry(name, data=data) for name, data in GOOD.items()]
    archive = write_tar(tmp_path / "hostile.tar.gz", entries + list(hostile.values()) + list(inside.values()))
    out = tmp_path / "a" / "b" / "out"

    with pytest.raises(ArchiveError) as refused:
        extract(archive, out, limits=LIMITS)

    assert set(refused.value.refused) == set(hostile)
    assert {error.reason for error in refused.value.refused.values()} == {"unsafe_archive"}
    assert refused.value.failure_class == FailureClass.PERMANENT
    for name, error in refused.value.refused.items():
        assert repr(name) in error.detail
    assert "over the cap" in refused.value.refused["huge.bin"].detail
    assert tree(out) == {**GOOD, "fma_small/copy.mp3": GOOD["fma_small/000/000002.mp3"]}
    assert os.readlink(out / "fma_small/same-dir") == "000"
    assert set(refused.value.extracted) >= {out / name for name in GOOD}
    assert sorted(p.name for p in tmp_path.rglob("*") if not p.is_relative_to(out)) == [
        "a", "b", "hostile.tar.gz"]


def test_hostile_zip_members_are_refused_and_bzip2_members_extract(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "fma_large.zip", {**GOOD, "../evil.mp3": b"x", "/abs.mp3": b"x",
                                                     "C:/win.mp3": b"x", "huge.mp3": content("h", CAP + 1)},
                        links={"out-link": "../../elsewhere", "ok-link": "fma_small/checksums"})

    with pytest.raises(ArchiveError) as refused:
        extract(archive, tmp_path / "out", limits=LIMITS)

    assert set(refused.value.refused) == {"../evil.mp3", "/abs.mp3", "C:/win.mp3", "huge.mp3", "out-link"}
    assert tree(tmp_path / "out") == GOOD
    assert (tmp_path / "out" / "ok-link").read_bytes() == GOOD["fma_small/checksums"]


def test_a_link_already_in_the_target_is_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "fma_small").symlink_to(outside)
    archive = write_zip(tmp_path / "fma.zip", GOOD)

    with pytest.raises(ArchiveError) as refused:
        extract(archive, out, limits=LIMITS)

    assert set(refused.value.refused) == set(GOOD)
    assert "through a link" in refused.value.refused["fma_small/checksums"].detail
    assert list(outside.iterdir()) == []


def test_a_member_asked_for_but_absent_is_named_and_the_rest_extract(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "fma.zip", GOOD)

    with pytest.raises(ArchiveError) as failed:
        extract(archive, tmp_path / "out", members=["fma_small/000/000002.mp3", "fma_small/999/999999.mp3"],
                limits=LIMITS)

    assert list(failed.value.refused) == ["fma_small/999/999999.mp3"]
    assert failed.value.reason == "missing_member"
    assert failed.value.extracted == [tmp_path / "out/fma_small/000/000002.mp3"]


def test_a_second_extraction_skips_members_already_there(tmp_path: Path) -> None:
    archive = good_tar(tmp_path / "a.tar.gz")
    extract(archive, tmp_path / "out", limits=LIMITS)
    before = {p: p.stat().st_ino for p in (tmp_path / "out").rglob("*") if p.is_file()}
    (tmp_path / "out/fma_small/checksums").write_bytes(b"short")

    extract(archive, tmp_path / "out", limits=LIMITS)

    after = {p: p.stat().st_ino for p in (tmp_path / "out").rglob("*") if p.is_file()}
    changed = {p.name for p in before if before[p] != after[p]}
    assert changed == {"checksums"}
    assert tree(tmp_path / "out") == GOOD
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_damaged_archives_are_named_truncated_or_corrupt(tmp_path: Path) -> None:
    gz = good_tar(tmp_path / "good.tar.gz").read_bytes()
    zipped = write_zip(tmp_path / "good.zip", GOOD).read_bytes()
    flipped = bytearray(zipped)
    flipped[200] ^= 0xFF
    bad_crc = bytearray(gz)
    bad_crc[-6] ^= 0xFF
    cases = {"cut.tar.gz": (gz[: len(gz) * 2 // 3], "truncated_archive"),
             "cut.zip": (zipped[:-30], "truncated_archive"),
             "flipped.zip": (bytes(flipped), "corrupt_archive"),
             "bad-crc.tar.gz": (bytes(bad_crc), "corrupt_archive"),
             "page.zip": (b"<html>Not Found</html>" * 30, "corrupt_archive")}
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DownloadError) as failed:
            extract(tmp_path / name, tmp_path / "out" / name, limits=LIMITS)
        assert (name, failed.value.reason) == (name, reason)
        assert failed.value.failure_class == FailureClass.TRANSIENT
        assert name in failed.value.detail


def test_list_and_read_members(tmp_path: Path) -> None:
    for archive in (good_tar(tmp_path / "a.tar.gz"), write_zip(tmp_path / "a.zip", GOOD)):
        assert list_members(archive) == list(GOOD)
        assert read_member(archive, "fma_small/checksums", max_bytes=100) == GOOD["fma_small/checksums"]
        with pytest.raises(DownloadError) as large:
            read_member(archive, "fma_small/000/000002.mp3", max_bytes=100)
        with pytest.raises(DownloadError) as missing:
            read_member(archive, "fma_small/nope", max_bytes=100)
        assert (large.value.reason, missing.value.reason) == ("too_large", "missing_member")
        assert not (tmp_path / "fma_small").exists()


def test_split_zip_parts_are_size_checked_joined_and_extract(tmp_path: Path) -> None:
    whole = write_zip(tmp_path / "whole.zip", GOOD).read_bytes()
    cuts = [0, len(whole) // 3, 2 * len(whole) // 3, len(whole)]
    parts = []
    for index in range(3):
        part = tmp_path / f"mp3.zip.{index + 1:03d}"
        part.write_bytes(whole[cuts[index]:cuts[index + 1]])
        parts.append(part)
    sizes = [part.stat().st_size for part in parts]
    joined = tmp_path / "mp3.zip"

    with pytest.raises(DownloadError) as wrong:
        join_parts(parts, joined, sizes=[sizes[0], sizes[1] + 1, sizes[2]])
    assert wrong.value.reason == "size_mismatch" and "mp3.zip.002" in wrong.value.detail
    assert not joined.exists()

    assert join_parts(parts, joined, sizes=sizes).read_bytes() == whole
    inode = joined.stat().st_ino
    for part in parts:
        part.unlink()
    assert join_parts(parts, joined, sizes=sizes).stat().st_ino == inode
    extract(joined, tmp_path / "out", limits=LIMITS)
    assert tree(tmp_path / "out") == GOOD
