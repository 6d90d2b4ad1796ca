"""Archive extraction that trusts nothing inside the archive.

Formats: tar (plain, gzip, bzip2, xz) and zip (stored, deflate, bzip2 members, as FMA uses), told apart
by their magic bytes, not by the file name. Every member is checked before a byte of it is written:
absolute names, ``..`` components, links that resolve outside the target (judged against the real
filesystem, symlinks included), device files and members over the :class:`Limits` are refused with the
member named, and only that member is skipped: the rest of the archive still extracts, and the refusals are
raised together at the end as an :class:`ArchiveError`. Each member is written to a temporary name and
renamed, so a killed run never leaves half a track, and a member refused while it is written (a tar
member found to expand too far) leaves nothing behind: neither its temporary file nor the folders made
for it. A member already present with its size is skipped, so a re-run is cheap. With ``members`` given
only those are extracted; a tar is read once and reading stops as soon as the last wanted member is out (a
``--limit``-ed run touches the head of a 5 GB tar).

A tar is read to its very end when fully extracted, so a gzip trailer's CRC is checked; a file that
ends early is ``truncated_archive``, one that fails to decode ``corrupt_archive`` (both transient: the
caller deletes the download with :func:`discard_if_broken`, so the next run fetches it again).

:func:`extract_verified` is the whole round for datasets that publish a checksum of every member: extract
what is not on disk and verified yet, then check each member against the published list.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from downloaders.transports.errors import ArchiveError, DownloadError, permanent
from downloaders.transports.http import Checksum, discard, hash_file
from store.atomic import atomic_path, locked
from store.settings import Settings

_BLOCK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_TAR_MODES = {b"\x1f\x8b": "r:gz", b"BZh": "r:bz2", b"\xfd7zXZ\x00": "r:xz"}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_LINK_MAX = 4096
_UNIX = 3
"""``create_system`` of zips made on Unix: only theirs carry file types in ``external_attr``."""
_DECODE_ERRORS = (zlib.error, lzma.LZMAError, zipfile.BadZipFile, tarfile.ReadError, OSError)
BROKEN = frozenset({"truncated_archive", "corrupt_archive"})
"""Reasons that mean the downloaded archive itself is damaged, so only a fresh download helps."""
SMALL_BYTES = 1 << 20
"""What any member, and any archive, may expand to whatever its compression ratio. Small files (a header, a
short text, a silent clip) compress far better than audio and cannot fill a disk one by one: the ratio of
the archive as a whole still bounds a crowd of them."""
_STEP = 1 << 16
"""Most compressed bytes a tar's decompressor gets per read."""
_HELD = {"r:gz": 0, "r:xz": 1 << 16, "r:bz2": 1 << 20}
"""Compressed bytes a decompressor may hold before what they decompress to comes out: none for gzip's
stream, an LZMA2 chunk (at most 64 KiB compressed) for xz, a whole block (at most ~900 kB) for bzip2. The
compressed bytes counted while a tar member is written miss at most these plus one read of what it came
from, so its ratio is judged with them added."""


@dataclass(frozen=True)
class Limits:
    """How far one extraction may expand; a member over any of them is refused and nothing of it is written.

    The defaults (``Settings``) fit the published archives with room to spare and stop decompression bombs:

    * ``member_bytes`` (``max_member_bytes``, 16 GiB): one member. The largest real members are FMA full's
      untrimmed MP3s, a few hundred MB for the longest.
    * ``archive_bytes`` (``max_archive_bytes``, 1 TiB): everything one extraction writes. FMA full
      (``fma_full.zip``, ~880 GiB of MP3s) is the largest archive any source extracts whole.
    * ``ratio`` (``max_compression_ratio``, 100): bytes written per compressed byte, for each member over
      :data:`SMALL_BYTES` and for the archive as a whole (everything written at most ``ratio`` times the
      archive's size, plus :data:`SMALL_BYTES`). MP3s (FMA, MTG-Jamendo, MagnaTagATune) are compressed
      already (~1) and recorded music in WAV (MusicBench) gzips little. The MSD subset's HDF5 track files
      (float64 analysis arrays of three-decimal values, zero-padded 1,024-byte strings) gzip to 2.5-3.6, the
      shortest songs the most (measured by ``benchmarks/archive_ratios.py``): far under the cap. Deflate's
      ceiling is ~1,030 and bzip2's is higher, so a bomb (1 MiB of zip that expands to 1 GiB) is refused
      before a byte of it is written. A member of pure silence over :data:`SMALL_BYTES` is refused too; it
      would be rejected as silent later anyway.

    A zip states each member's sizes, so its members are judged before a byte is written; a compressed tar
    does not, so each member's ratio is measured on the compressed bytes read while it is written, and the
    member is refused (its temporary file deleted) as soon as it goes over.
    """

    member_bytes: int
    archive_bytes: int
    ratio: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_member_bytes, settings.max_archive_bytes, settings.max_compression_ratio)

    def expands(self, compressed: int) -> int:
        """The most that ``compressed`` bytes may expand to."""
        return int(self.ratio * compressed) + SMALL_BYTES


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str
    """``file``, ``dir``, ``symlink``, ``hardlink`` or ``special``."""
    size: int
    link: str = ""
    open: Callable[[], IO[bytes]] | None = None
    compressed: int | None = None
    """Its size in the archive where the archive says so (a zip); ``None`` where it is only known by reading
    (a compressed tar)."""
    read_so_far: Callable[[], int] | None = None
    """Compressed bytes read from the archive so far, for measuring a member whose ``compressed`` is unknown."""
    held: int = 0
    """Compressed bytes of the member that may have been read before it started (see :data:`_HELD`)."""


def _normal(name: str) -> str:
    return "/".join(part for part in name.replace("\\", "/").split("/") if part not in ("", "."))


def _unsafe(archive: Path, name: str, why: str) -> DownloadError:
    return permanent("unsafe_archive", f"{archive.name}: member {name!r} {why}; it was not extracted.")


def _over(archive: Path, name: str, why: str, setting: str) -> DownloadError:
    """A member refused by one of the :class:`Limits`: what it is, and the setting that would let it in."""
    return permanent("unsafe_archive", f"{archive.name}: member {name!r} {why} ({setting}), so it was not "
                     f"extracted. If you trust this archive, raise {setting} (MUSICTEXT_{setting.upper()} or "
                     "musictext.toml) and re-run with --force.")


def _broken(archive: Path, error: BaseException) -> DownloadError:
    message = str(error) or type(error).__name__
    ended = isinstance(error, EOFError) or "end of data" in message or "not a zip file" in message.lower()
    if ended:
        return DownloadError("truncated_archive", f"{archive} ends early ({message}): an interrupted "
                             "download; delete it so the next run downloads it again.")
    return DownloadError("corrupt_archive", f"{archive} cannot be decoded ({message}): a damaged "
                         "download; delete it so the next run downloads it again.")


def _format(archive: Path) -> str:
    """``zip`` or a ``tarfile`` read mode, from the first bytes of the file."""
    with archive.open("rb") as handle:
        head = handle.read(512)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    for magic, mode in _TAR_MODES.items():
        if head.startswith(magic):
            return mode
    if len(head) == 512 and _is_tar_header(head):
        return "r:"
    raise DownloadError("corrupt_archive", f"{archive} is neither a tar nor a zip archive (or it is empty); "
                        "delete it so the next run downloads it again.")


def _is_tar_header(block: bytes) -> bool:
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class _Counted:
    """The archive file as a tar's decompressor reads it: at most :data:`_STEP` bytes a read, counted."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(_STEP if size < 0 else min(size, _STEP))
        self.count += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return True

    def read_so_far(self) -> int:
        return self.count


@contextmanager
def _members(archive: Path) -> Iterator[Iterator[_Member]]:
    """The archive's members in order, whatever the format; decoding errors become DownloadErrors."""
    try:
        mode = _format(archive)
        if mode == "zip":
            with zipfile.ZipFile(archive) as handle:
                yield _zip_members(handle)
        else:
            with archive.open("rb") as raw:
                counted = _Counted(raw) if mode != "r:" else None
                with tarfile.open(fileobj=counted or raw, mode=mode) as handle:  # type: ignore[arg-type]
                    yield _tar_members(handle, counted, _STEP + _HELD.get(mode, 0))
    except (EOFError, *_DECODE_ERRORS) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise DownloadError("io_error", f"{archive}: reading or extracting failed ({error}); check free "
                                "space and permissions, retried next run.") from error
        raise _broken(archive, error) from error


def _tar_members(handle: tarfile.TarFile, counted: _Counted | None, held: int) -> Iterator[_Member]:
    """A plain tar's members are stored as they are (compressed size = size); a compressed tar's are
    measured as they are read."""
    for info in handle:
        measure = ({"compressed": info.size} if counted is None
                   else {"read_so_far": counted.read_so_far, "held": held})
        if info.isreg():
            yield _Member(info.name, "file", info.size, open=lambda info=info: handle.extractfile(info), **measure)
        elif info.isdir():
            yield _Member(info.name, "dir", 0)
        elif info.issym():
            yield _Member(info.name, "symlink", 0, link=info.linkname)
        elif info.islnk():
            yield _Member(info.name, "hardlink", info.size, link=info.linkname,
                          open=lambda info=info: handle.extractfile(info), **measure)
        else:
            yield _Member(info.name, "special", 0)
    _drain(handle)


def _drain(handle: tarfile.TarFile) -> None:
    """Read a compressed tar to the end of its stream, so its trailer (gzip CRC and length) is checked."""
    if handle.fileobj is not None:
        while handle.fileobj.read(_BLOCK):
            pass


def _zip_members(handle: zipfile.ZipFile) -> Iterator[_Member]:
    for info in handle.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == _UNIX else 0
        if info.is_dir():
            yield _Member(info.filename, "dir", 0)
        elif kind == stat.S_IFLNK and info.file_size <= _LINK_MAX:
            yield _Member(info.filename, "symlink", 0, link=handle.read(info).decode("utf-8", "replace"))
        elif kind not in (0, stat.S_IFREG):
            yield _Member(info.filename, "special", 0)
        else:
            yield _Member(info.filename, "file", info.file_size, open=lambda info=info: handle.open(info),
                          compressed=info.compress_size)


class _Extraction:
    """One pass over an archive: where each wanted member goes, what was written, what was refused."""

    def __init__(self, archive: Path, target_dir: Path, members: Collection[str] | None, limits: Limits,
                 strip_components: int) -> None:
        self.archive = archive
        self.target_dir = target_dir
        self.root = os.path.realpath(target_dir)
        self.wanted = None if members is None else {_normal(name): name for name in members}
        self.limits = limits
        self.expands = limits.expands(archive.stat().st_size)
        """What the whole archive may expand to, by ``max_compression_ratio``."""
        self.strip = strip_components
        self.written = 0
        self.extracted: list[Path] = []
        self.refused: dict[str, DownloadError] = {}

    def done(self) -> bool:
        return self.wanted is not None and not self.wanted

    def take(self, member: _Member) -> None:
        if self.wanted is not None:
            if _normal(member.name) not in self.wanted:
                return
            del self.wanted[_normal(member.name)]
        try:
            self._check(member)
            parts = _normal(member.name).split("/")[self.strip:]
            if parts and parts != [""]:
                self._write(member, parts)
        except DownloadError as refusal:
            self.refused[member.name] = refusal

    def _check(self, member: _Member) -> None:
        """Refusals that need only the archive's own word: names, link names and kinds."""
        if _escapes(member.name):
            raise _unsafe(self.archive, member.name, "has an absolute path or a '..' component")
        if member.kind == "hardlink" and _escapes(member.link):
            raise self._outside(member)
        if member.kind == "symlink" and os.path.isabs(member.link):
            raise self._outside(member)
        if member.kind == "special":
            raise _unsafe(self.archive, member.name, "is a device, fifo or other special file")

    def _check_size(self, member: _Member) -> None:
        """The :class:`Limits` a member is judged by before it is written, on the sizes the archive states."""
        size, total = member.size, self.written + member.size
        if size > self.limits.member_bytes:
            raise self._over(member, f"is {size:,} bytes, over the cap of {self.limits.member_bytes:,}",
                             "max_member_bytes")
        if member.compressed is not None and size > self.limits.expands(member.compressed):
            raise self._over(member, f"expands {member.compressed:,} compressed bytes to {size:,}, {self._ratio()}",
                             "max_compression_ratio")
        if total > self.limits.archive_bytes:
            raise self._over(member, f"would bring this extraction to {total:,} bytes, over the cap of "
                             f"{self.limits.archive_bytes:,}", "max_archive_bytes")
        if total > self.expands:
            raise self._over(member, f"would bring this extraction to {total:,} bytes, over {self.limits.ratio:g} "
                             f"times the archive's {self.archive.stat().st_size:,} bytes", "max_compression_ratio")

    def _check_written(self, member: _Member, written: int, compressed: int | None) -> None:
        """The :class:`Limits` a member is held to while it is written (a size that lied, a tar's ratio). What
        it says holds no figure measured on the way, so a refusal reads the same on every run."""
        if written > self.limits.member_bytes:
            raise self._over(member, f"holds more than the cap of {self.limits.member_bytes:,} bytes",
                             "max_member_bytes")
        if compressed is not None and written > self.limits.expands(compressed + member.held):
            raise self._over(member, f"of {member.size:,} bytes decompresses {self._ratio()}",
                             "max_compression_ratio")

    def _ratio(self) -> str:
        return f"over the ratio of {self.limits.ratio:g} to 1 (a decompression bomb, or a damaged archive)"

    def _over(self, member: _Member, why: str, setting: str) -> DownloadError:
        return _over(self.archive, member.name, why, setting)

    def _outside(self, member: _Member) -> DownloadError:
        return _unsafe(self.archive, member.name, f"is a link to {member.link!r}, outside the target folder")

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def _folder(self, member: _Member, parts: list[str]) -> str:
        """The real path of a folder of the target; refused when an earlier symlink member makes it lie
        outside the target."""
        real = os.path.realpath(os.path.join(self.root, *parts))
        if not self._inside(real):
            raise _unsafe(self.archive, member.name, f"would be written through a link to {real}")
        return real

    def _write(self, member: _Member, parts: list[str]) -> None:
        if member.kind == "dir":
            os.makedirs(self._folder(member, parts), exist_ok=True)
            return
        path = Path(self._folder(member, parts[:-1])) / parts[-1]
        if member.kind == "symlink":
            os.makedirs(path.parent, exist_ok=True)
            self._symlink(member, path)
        elif not _present(path, member.size):
            self._check_size(member)
            self._copy(member, path)
        self.extracted.append(self.target_dir.joinpath(*parts))

    def _symlink(self, member: _Member, path: Path) -> None:
        """A link is made only when it resolves inside the target, and never replaces an existing entry (a
        re-pointed link could turn an earlier, checked link into an escape)."""
        if not self._inside(os.path.realpath(os.path.join(path.parent, member.link))):
            raise self._outside(member)
        if os.path.lexists(path):
            if os.path.islink(path) and os.readlink(path) == member.link:
                return
            raise _unsafe(self.archive, member.name, "is a link that would replace an existing file")
        os.symlink(member.link, path)

    def _copy(self, member: _Member, path: Path) -> None:
        """Write the member through a temporary file; refused on the way, it leaves neither that file nor the
        folders made for it."""
        assert member.open is not None
        made = _missing_folders(path.parent)
        try:
            with atomic_path(path) as temp, member.open() as source, temp.open("wb") as sink:
                start = member.read_so_far() if member.read_so_far else 0
                written = 0
                while block := source.read(_BLOCK):
                    written += len(block)
                    read = member.read_so_far() - start if member.read_so_far else None
                    self._check_written(member, written, read)
                    sink.write(block)
        except DownloadError:
            _remove_empty(made)
            raise
        self.written += written


def _present(path: Path, size: int) -> bool:
    """Whether ``path`` already holds a regular file of ``size`` bytes (extracted by an earlier run)."""
    try:
        present = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(present.st_mode) and present.st_size == size


def _missing_folders(folder: Path) -> list[Path]:
    """The folders that writing into ``folder`` will create, deepest first."""
    missing = []
    while not folder.is_dir() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are still empty; another writer's file keeps its own."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _escapes(name: str) -> bool:
    """An absolute name (POSIX or Windows) or one with a '..' component."""
    absolute = name.startswith(("/", "\\")) or bool(_DRIVE.match(name))
    return absolute or ".." in name.replace("\\", "/").split("/")


def extract(archive: Path, target_dir: Path, *, members: Collection[str] | None = None, limits: Limits,
            strip_components: int = 0) -> list[Path]:
    """Extract ``archive`` (or only ``members``, named as in the archive) under ``target_dir``; returns the
    files and links written or already there. Refused and missing members raise :class:`ArchiveError`
    once everything else is out; a damaged archive raises ``truncated_archive``/``corrupt_archive``."""
    if members is not None and not members:
        return []
    target_dir.mkdir(parents=True, exist_ok=True)
    work = _Extraction(archive, target_dir, members, limits, strip_components)
    with _members(archive) as found:
        for member in found:
            work.take(member)
            if work.done():
                break
    for name in (work.wanted or {}).values():
        work.refused[name] = permanent("missing_member", f"{archive.name} has no member {name!r}; the "
                                       "archive does not match its metadata.")
    if work.refused:
        raise ArchiveError(archive, work.refused, work.extracted)
    return work.extracted


def discard_if_broken(error: DownloadError, *downloads: Path) -> bool:
    """Discard ``downloads`` (the archive, or the parts it was joined from) when ``error`` says the archive no
    longer decodes, so the next run downloads them again; whether it did."""
    if error.reason not in BROKEN:
        return False
    for download in downloads:
        discard(download)
    return True


def extract_verified(
    fetch: Callable[[], Path], target_dir: Path, members: Sequence[str], *,
    check: Callable[[str], DownloadError | None], limits: Limits,
) -> dict[str, DownloadError | None]:
    """Each member's outcome under ``target_dir``: ``None`` when it is there and passes ``check`` (the
    dataset's comparison with its published list, see :func:`member_mismatch`), else why not.

    Members that pass already are left alone, and the archive is fetched only when some do not. A refused
    member costs only itself; an archive that breaks off costs the members not written yet (those written
    before still count, after their check) and is discarded when it no longer decodes.
    """
    outcome: dict[str, DownloadError | None] = {member: None for member in members if check(member) is None}
    missing = [member for member in members if member not in outcome]
    if missing:
        outcome.update(_extract_checked(fetch, target_dir, missing, check, limits))
    return {member: outcome[member] for member in members}


def _extract_checked(
    fetch: Callable[[], Path], target_dir: Path, members: Sequence[str],
    check: Callable[[str], DownloadError | None], limits: Limits,
) -> dict[str, DownloadError | None]:
    try:
        archive = fetch()
    except DownloadError as error:
        return dict.fromkeys(members, error)
    failures: Mapping[str, DownloadError] = {}
    try:
        extract(archive, target_dir, members=members, limits=limits)
    except ArchiveError as error:
        failures = error.refused
    except DownloadError as error:
        discard_if_broken(error, archive)
        failures = dict.fromkeys(members, error)
    lost = {member for member in failures if not (target_dir / member).is_file()}
    return {member: failures[member] if member in lost else check(member) for member in members}


def member_mismatch(
    path: Path, expected: Checksum, *, name: str, listed_in: str, advice: str
) -> DownloadError | None:
    """``None`` when ``path`` holds the bytes ``expected``; else a permanent ``checksum_mismatch``, with the
    file deleted so nothing unverified stays under its name. Permanent, because the archive matched its own
    published checksum: its member disagrees with the published list, and extracting again cannot help.
    ``listed_in`` names that list and ``advice`` says what to do, in the dataset's words."""
    actual = hash_file(path, expected.algorithm)
    if actual == expected.hexdigest:
        return None
    path.unlink(missing_ok=True)
    return permanent("checksum_mismatch", f"{name} has {expected.algorithm} {actual} but {listed_in} says "
                                          f"{expected.hexdigest}; the file was deleted. {advice}")


def list_members(archive: Path) -> list[str]:
    """Names of the files in ``archive`` (regular files and hard links), in archive order."""
    with _members(archive) as found:
        return [member.name for member in found if member.kind in ("file", "hardlink")]


def read_member(archive: Path, name: str, *, max_bytes: int) -> bytes:
    """One member's bytes without extracting anything (a checksum list, a metadata file inside)."""
    wanted = _normal(name)
    with _members(archive) as found:
        for member in found:
            if _normal(member.name) != wanted or member.open is None:
                continue
            if member.size > max_bytes:
                raise permanent("too_large", f"{archive.name}: member {name!r} is {member.size:,} bytes, "
                                f"more than the {max_bytes:,} expected of it.")
            with member.open() as source:
                return source.read(max_bytes + 1)[:max_bytes]
    raise permanent("missing_member", f"{archive.name} has no member {name!r}; the archive does not match "
                    "its metadata.")


def join_parts(parts: Sequence[Path], target: Path, *, sizes: Sequence[int] | None = None) -> Path:
    """Concatenate a split archive (``mp3.zip.001``…) into ``target`` after checking every part's size;
    a target already complete is returned as it is."""
    if sizes is not None and len(sizes) != len(parts):
        raise ValueError(f"{len(parts)} parts but {len(sizes)} sizes")
    with locked(target):
        return _join(parts, target, sizes)


def _join(parts: Sequence[Path], target: Path, sizes: Sequence[int] | None) -> Path:
    if sizes is not None and target.is_file() and target.stat().st_size == sum(sizes):
        return target
    held = [part.stat().st_size if part.is_file() else None for part in parts]
    for index, (part, size) in enumerate(zip(parts, held, strict=True)):
        if size is None:
            raise DownloadError("missing_part", f"{part} is missing, so {target.name} cannot be joined; the "
                                "next run downloads it again.")
        if sizes is not None and size != sizes[index]:
            raise DownloadError("size_mismatch", f"{part} is {size:,} bytes, expected {sizes[index]:,}: a "
                                "broken download; delete it so the next run downloads it again.")
    if target.is_file() and target.stat().st_size == sum(held):  # type: ignore[arg-type]
        return target
    with atomic_path(target) as temp, temp.open("wb") as sink:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, sink, _BLOCK)
    return target
