"""How far an archive may expand: decompression bombs refused with nothing left on disk, real data let through.

Real zips and tars written with the standard library; the MSD case runs the real catalog against the
loopback mirror serving a subset with hostile members added.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from published import msd as published

from downloaders import msd
from downloaders.base import SourceContext
from downloaders.transports.archives import SMALL_BYTES, Limits, extract
from downloaders.transports.errors import ArchiveError
from store.layout import DataRoot, make_item_id
from store.settings import Settings, load_settings
from store.status import FailureClass, read_status

MIB = 1 << 20


def content(name: str, size: int) -> bytes:
    """Incompressible bytes, as audio nearly is."""
    return np.random.default_rng(sum(name.encode())).bytes(size)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


GOOD = {"good/a.mp3": content("a", 300_000), "good/b.mp3": content("b", 200_000)}


@pytest.fixture()
def defaults(monkeypatch: pytest.MonkeyPatch) -> Limits:
    """The limits as shipped: no ``MUSICTEXT_*`` variable, no settings file."""
    for name in [name for name in os.environ if name.startswith("MUSICTEXT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MUSICTEXT_CONFIG", os.devnull)
    return Limits.of(load_settings())


def zeros_zip(path: Path, zeros: dict[str, int], files: dict[str, bytes] | None = None) -> Path:
    """A deflated zip of ``files`` and members of ``zeros[name]`` MiB of zero bytes, streamed in."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (files or {}).items():
            archive.writestr(name, data)
        for name, mib in zeros.items():
            with archive.open(name, "w", force_zip64=True) as sink:
                for _ in range(mib):
                    sink.write(bytes(MIB))
    return path


class Zeros:
    """``size`` zero bytes as a file to read, without holding them."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def read(self, size: int = -1) -> bytes:
        size = self.size if size < 0 else min(size, self.size)
        self.size -= size
        return bytes(size)


def tar_of(path: Path, files: dict[str, bytes | Zeros], mode: str) -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, data if isinstance(data, Zeros) else io.BytesIO(data))
    return path


def sparse(size: int, ratio: int) -> bytes:
    """``size`` bytes that compress about ``ratio`` to 1 whatever the codec: a random KiB in every ``ratio``."""
    rng = np.random.default_rng(ratio)
    chunk = 1024 * ratio
    return b"".join(rng.bytes(1024) + bytes(chunk - 1024) for _ in range(size // chunk))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")))


@pytest.fixture(scope="module")
def gib_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's bomb: 1 MiB of zip that expands to 1 GiB, beside two ordinary members."""
    return zeros_zip(tmp_path_factory.mktemp("bomb") / "bomb.zip", {"deep/er/bomb.bin": 1024}, GOOD)


def test_a_1_mib_zip_of_1_gib_is_refused_by_the_defaults_before_a_byte_is_written(
    gib_bomb: Path, defaults: Limits, tmp_path: Path
) -> None:
    with zipfile.ZipFile(gib_bomb) as archive:
        assert archive.getinfo("deep/er/bomb.bin").compress_size < 1.1 * MIB
    out = tmp_path / "out"

    with pytest.raises(ArchiveError) as refused:
        extract(gib_bomb, out, limits=defaults)

    bomb = refused.value.refused["deep/er/bomb.bin"]
    assert list(refused.value.refused) == ["deep/er/bomb.bin"]
    assert (bomb.reason, bomb.failure_class) == ("unsafe_archive", FailureClass.PERMANENT)
    assert "1,073,741,824" in bomb.detail and "over the ratio of 100 to 1" in bomb.detail
    assert "MUSICTEXT_MAX_COMPRESSION_RATIO" in bomb.detail and "--force" in bomb.detail
    assert tree(out) == GOOD
    assert not (out / "deep").exists() and leftovers(out) == []


@pytest.mark.parametrize(("mode", "mib"), [("w:gz", 16), ("w:xz", 16), ("w:bz2", 160)])
def test_a_compressed_tar_member_is_stopped_while_written_and_leaves_no_file_or_folder(
    mode: str, mib: int, defaults: Limits, tmp_path: Path
) -> None:
    """bzip2 needs the larger bomb: it reads a whole block (up to ~900 kB) before any of it comes out, so a
    member is let run on ``max_compression_ratio`` times that much before it is judged."""
    files = {"good/a.mp3": GOOD["good/a.mp3"], "deep/er/zeros.wav": Zeros(mib * MIB),
             "good/b.mp3": GOOD["good/b.mp3"]}
    archive = tar_of(tmp_path / "bomb.tar.x", files, mode)
    out = tmp_path / "out"

    with pytest.raises(ArchiveError) as refused:
        extract(archive, out, limits=defaults)

    assert list(refused.value.refused) == ["deep/er/zeros.wav"]
    assert "max_compression_ratio" in refused.value.refused["deep/er/zeros.wav"].detail
    assert tree(out) == GOOD, "the members after the refused one still extract"
    assert not (out / "deep").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz", "zip"])
def test_compressible_real_data_extracts_under_the_defaults(mode: str, defaults: Limits, tmp_path: Path) -> None:
    """An MSD track file, a silent clip under 1 MiB, audio, and a member at 60 to 1 (near the cap, right after a
    small member, so a tar's read-ahead is in play) all pass."""
    song = published.songs()[0]
    files = {
        song.member: published.track_file(song),
        "silence.wav": bytes(900_000),
        "small.txt": b"x" * 100,
        "near-the-cap.bin": sparse(8 * MIB, 60),
        **GOOD,
    }
    if mode == "zip":
        archive = zeros_zip(tmp_path / "real.zip", {}, files)
    else:
        archive = tar_of(tmp_path / "real.tar.x", files, mode)

    extract(archive, tmp_path / "out", limits=defaults)

    assert tree(tmp_path / "out") == files


def test_many_small_members_are_bounded_by_the_ratio_of_the_whole_archive(
    defaults: Limits, tmp_path: Path
) -> None:
    """Forty members of 1 MiB of zeros: each is small enough to pass alone, together they would expand the
    zip ~900 times; what is written stops at 100 times its size (plus 1 MiB)."""
    names = {f"crowd/{index:02d}.bin": 1 for index in range(40)}
    archive = zeros_zip(tmp_path / "crowd.zip", names)
    out = tmp_path / "out"

    with pytest.raises(ArchiveError) as refused:
        extract(archive, out, limits=defaults)

    written = sum(path.stat().st_size for path in out.rglob("*.bin"))
    assert 0 < written <= 100 * archive.stat().st_size + SMALL_BYTES
    assert len(refused.value.refused) + written // MIB == 40
    assert all("times the archive's" in error.detail for error in refused.value.refused.values())
    assert all(not (out / name).exists() for name in refused.value.refused)


def test_the_archive_cap_counts_what_one_extraction_writes(tmp_path: Path) -> None:
    files = {f"{index}.mp3": content(str(index), 300_000) for index in range(4)}
    archive = tar_of(tmp_path / "four.tar.gz", files, "w:gz")
    limits = Limits(member_bytes=1 << 30, archive_bytes=700_000, ratio=100)

    with pytest.raises(ArchiveError) as refused:
        extract(archive, tmp_path / "out", limits=limits)

    assert sorted(refused.value.refused) == ["2.mp3", "3.mp3"]
    assert "max_archive_bytes" in refused.value.refused["2.mp3"].detail
    assert "MUSICTEXT_MAX_ARCHIVE_BYTES" in refused.value.refused["2.mp3"].detail
    assert sorted(tree(tmp_path / "out")) == ["0.mp3", "1.mp3"]

    extract(archive, tmp_path / "out", limits=limits)  # a re-run writes only what is missing

    assert tree(tmp_path / "out") == files


def test_settings_raise_each_cap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    zeros = tar_of(tmp_path / "zeros.tar.gz", {"zeros.bin": Zeros(8 * MIB)}, "w:gz")
    with pytest.raises(ArchiveError):
        extract(zeros, tmp_path / "refused", limits=Limits.of(Settings()))
    monkeypatch.setenv("MUSICTEXT_CONFIG", os.devnull)
    monkeypatch.setenv("MUSICTEXT_MAX_COMPRESSION_RATIO", "5000")
    monkeypatch.setenv("MUSICTEXT_MAX_ARCHIVE_BYTES", str(9 * MIB))
    monkeypatch.setenv("MUSICTEXT_MAX_MEMBER_BYTES", str(8 * MIB))

    limits = Limits.of(load_settings())

    assert limits == Limits(member_bytes=8 * MIB, archive_bytes=9 * MIB, ratio=5000.0)
    extract(zeros, tmp_path / "out", limits=limits)
    assert (tmp_path / "out/zeros.bin").stat().st_size == 8 * MIB


# ---- the MSD subset against the mirror ---------------------------------------------------------------------

BOMB_TRACK = "TRBMB0000000000001"
BIG_GARBAGE_TRACK = "TRBIG0000000000002"


def _member(track_id: str) -> str:
    return f"MillionSongSubset/data/{track_id[2]}/{track_id[3]}/{track_id[4]}/{track_id}.h5"


def _with_members(subset: bytes, added: dict[str, bytes | Zeros]) -> bytes:
    """The subset tar.gz with ``added`` appended."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(subset), mode="r:gz") as source, \
            tarfile.open(fileobj=buffer, mode="w:gz") as target:
        for info in source:
            target.addfile(info, source.extractfile(info) if info.isreg() else None)
        for name, data in added.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            target.addfile(info, data if isinstance(data, Zeros) else io.BytesIO(data))
    return buffer.getvalue()


def test_msd_refuses_a_bomb_and_deletes_a_large_track_file_it_rejects(
    mirror, mirror_settings, tmp_path: Path
) -> None:
    """A 64 MiB zero track member is refused while written; an 8 MiB member of noise (a stand-in for the 1 GiB
    one of the issue) extracts, is not HDF5, and is deleted. Neither stays in ``raw/``; the rest is
    catalogued, and a second run finds the same."""
    copy = published.build()
    hostile = _with_members(copy.subset, {_member(BOMB_TRACK): Zeros(64 * MIB),
                                          _member(BIG_GARBAGE_TRACK): np.random.default_rng(1).bytes(8 * MIB)})
    published.serve(mirror, published.PublishedMSD(hostile, copy.lastfm_zip, copy.lastfm_db, copy.songs))
    previews = tmp_path / "previews"
    previews.mkdir()
    ctx = SourceContext(DataRoot(mirror_settings.root), mirror_settings, {"audio_dir": str(previews)})

    rows = list(msd.catalog(ctx))

    assert [r.item_id for r in rows] == [make_item_id("msd", s.track_id) for s in copy.songs]
    records = read_status(ctx.root.status_dir("catalog", "msd"))
    bomb, garbage = (records[make_item_id("msd", track)] for track in (BOMB_TRACK, BIG_GARBAGE_TRACK))
    assert (bomb.reason, bomb.failure_class) == ("unsafe_archive", "permanent")
    assert "max_compression_ratio" in bomb.detail
    assert garbage.reason == "unreadable_hdf5" and "was deleted" in garbage.detail
    for track in (BOMB_TRACK, BIG_GARBAGE_TRACK):
        assert not list(ctx.root.path.rglob(f"*{track}*")), track
    assert leftovers(ctx.root.path) == []
    files = sorted(ctx.root.status_dir("catalog", "msd").iterdir())

    assert len(list(msd.catalog(ctx))) == len(copy.songs)

    assert sorted(ctx.root.status_dir("catalog", "msd").iterdir()) == files
    assert not list(ctx.root.path.rglob(f"*{BIG_GARBAGE_TRACK}*"))
