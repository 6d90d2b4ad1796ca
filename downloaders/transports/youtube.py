"""YouTube segments (MusicCaps, AudioSet, MSD's search matches) and searches through the yt-dlp Python API.

Only ``[start_s, end_s]`` is fetched: yt-dlp's ``download_ranges`` hands the range to ffmpeg, which reads
just that part of the stream in byte ranges. The URL is always a full one (``settings.youtube_url`` + id)
because ids may start with ``-``, and the output name is always set by us, never by the extractor (the
generic extractor would name a ``watch?v=`` URL after the query string). Searches go to
``settings.youtube_search_url`` + the URL-encoded query. Requests of one client are spaced by
``settings.youtube_sleep_s``; run at most ``settings.youtube_workers`` clients' downloads at once.

What is retried, at once and with the HTTP transport's backoff (``http_attempts`` tries in a row,
``http_backoff_s`` doubling up to ``http_backoff_max_s``): every 5xx and connection failure (a dropped or
stalled connection, a timeout), an HTTP 429 (waiting at least its ``Retry-After``, at most
:data:`~downloaders.transports.retry.RETRY_AFTER_MAX_S`), ffmpeg failures, and a segment that came out
short. Inside one attempt ffmpeg itself reconnects from the byte it reached when a range request breaks off,
stalls past ``http_timeout_s`` or answers 429 or 5xx. A download counts only when its decoded length covers
the segment to within :data:`~verification.audio.DURATION_TOLERANCE_S`; where the video, as the host states
its duration, ends before ``end_s``, the segment is complete at the video's end (AudioSet's end-of-video
segments), and a segment that starts after the video's end is the permanent ``video_shorter``.

Failures are classified from yt-dlp's message into a stable reason. Permanent ones are the host's own
answers that will not change by trying again (``video_private``, ``video_removed``, ``account_terminated``,
``copyright``, ``age_restricted``, ``sign_in_required``, ``unavailable`` for "video unavailable", 404 and
410, ``video_shorter``): the next run skips them unless forced. Everything else is transient and retried by
the next run, if the retries above did not already get it: ``network`` (every 5xx, "Service Unavailable"
included, and connection faults), ``rate_limited``, ``bot_check`` (not retried at once: trying again makes it
worse), ``postprocessing``, ``short_segment``, and ``youtube_error`` for a message no rule knows.

A cookies file (``settings.youtube_cookies``) is copied once per client into a private folder, because
yt-dlp writes its cookie jar back on exit and several workers must not rewrite the user's file at once. The
folder goes when the client does; one left by a killed worker is removed by the next client made anywhere on
the machine (its owner's lock on it is gone), so no copy of the secret outlives the run that made it.
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, quote_plus

import yt_dlp
from yt_dlp.extractor.youtube import YoutubeIE
from yt_dlp.utils import download_range_func

from downloaders.transports.errors import DownloadError, permanent
from downloaders.transports.retry import Retryable, parse_retry_after, with_retries
from processors.decode import open_audio
from processors.errors import AudioError
from store.settings import Settings
from store.status import FailureClass
from verification.audio import DURATION_TOLERANCE_S

PERMANENT = frozenset({"video_private", "video_removed", "account_terminated", "copyright", "age_restricted",
                       "sign_in_required", "unavailable", "video_shorter"})
TRANSIENT = frozenset({"bot_check", "rate_limited", "network", "postprocessing", "short_segment",
                       "youtube_error"})
RETRIED_AT_ONCE = frozenset({"network", "postprocessing", "short_segment"})
"""Transient reasons worth another attempt in the same run (HTTP 429 too, see :func:`_retryable`). Bot checks
and a session YouTube rate-limited for an hour are not: trying again at once makes them worse."""
MEDIA_SUFFIXES = frozenset({".webm", ".m4a", ".mp4", ".opus", ".ogg", ".mp3", ".wav", ".flac", ".mkv", ".mka",
                            ".aac"})
COOKIE_FOLDER_PREFIX = "musictext-cookies-"
OWNER_FILE = ".owner"
"""The lock file a live client holds in its private cookie folder; the kernel drops the lock if it is killed."""
UNOWNED_GRACE_S = 60.0
"""A cookie folder without a held lock is left alone this long: its maker may be between creating and locking."""

_RULES = [
    (r"http error 5\d\d|service unavailable|bad gateway|gateway time-?out|internal server error", "network"),
    (r"private video|video is private", "video_private"),
    (r"not a bot", "bot_check"),
    (r"confirm your age|age[- ]restrict|inappropriate for some users", "age_restricted"),
    (r"account\b.*\bterminated|channel\b.*\bterminated", "account_terminated"),
    (r"copyright", "copyright"),
    (r"removed by the (uploader|user)|has been removed|terms of service", "video_removed"),
    (r"members[- ]only|premium members|requires payment|sign in|log ?in", "sign_in_required"),
    (r"http error 429|too many requests|rate[- ]limit|try again later", "rate_limited"),
    (r"ffprobe|ffmpeg|post-?processing|audio codec|conversion failed", "postprocessing"),
    (r"requested format", "youtube_error"),
    (r"unavailable|not available|does not exist|incomplete youtube id|http error (404|410)", "unavailable"),
    (r"timed? ?out|connection|network|name resolution|unreachable|incomplete ?read|http error 403|"
     r"ssl|eof occurred|remote end closed|did not get any data", "network"),
]
"""First match wins. 5xx comes first: "HTTP Error 503: Service Unavailable" is the server's trouble, not the
video's, and must not read as the permanent "unavailable"."""
_COMPILED = [(re.compile(pattern, re.IGNORECASE), reason) for pattern, reason in _RULES]
_ADVICE = {
    "bot_check": "YouTube asks for a sign-in to prove this is no bot: pass a cookies file (youtube_cookies), "
                 "raise youtube_sleep_s or lower youtube_workers; retried next run.",
    "rate_limited": "YouTube is rate-limiting this machine: raise youtube_sleep_s or lower youtube_workers; "
                    "retried next run.",
    "network": "a network or server fault; retried next run.",
    "postprocessing": "ffmpeg could not cut or read the segment; retried next run (check that ffmpeg works).",
    "short_segment": "the download broke off before the segment's end; retried next run.",
    "youtube_error": "not a known permanent reason; retried next run (updating yt-dlp may help).",
}

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Segment:
    """A downloaded segment: the file, its decoded length and the video's length as the host states it."""

    path: Path
    duration_s: float
    video_s: float | None
    """``None`` when the host does not say."""


def video_url(settings: Settings, video_id: str) -> str:
    return settings.youtube_url + quote(video_id, safe="")


def search_url(settings: Settings, query: str) -> str:
    return settings.youtube_search_url + quote_plus(query)


def classify(message: str, video_id: str) -> DownloadError:
    """A yt-dlp error message as a DownloadError with a normalised reason and the message's last line."""
    line = next((text for text in reversed(message.strip().splitlines()) if text.strip()), "no message")
    line = line.removeprefix("ERROR: ").strip()
    reason = next((reason for pattern, reason in _COMPILED if pattern.search(message)), "youtube_error")
    if reason in PERMANENT:
        return DownloadError(reason, f"YouTube video {video_id}: {line}. This will not change by trying "
                             "again; it is skipped until forced.", failure_class=FailureClass.PERMANENT)
    return DownloadError(reason, f"YouTube video {video_id}: {line}. {_ADVICE[reason]}")


def output_template(target: Path) -> str:
    """yt-dlp's template for ``target``: its media suffix (if any) becomes the real one, ``%`` is escaped."""
    return str(_stem(target)).replace("%", "%%") + ".%(ext)s"


def segment_seconds(path: Path) -> float:
    """How long ``path`` lasts when decoded (not what its header claims: a cut-short file may claim more);
    raises ``AudioError`` when it cannot be decoded."""
    with open_audio(path, block_s=30.0) as stream:
        frames = sum(len(block) for block in stream.blocks)
    return frames / stream.sample_rate


def discard(path: Path) -> None:
    """Delete a download that cannot be used (and yt-dlp's temporary files for it), so none is taken for done."""
    for leftover in (path, *_temporaries(path)):
        leftover.unlink(missing_ok=True)


def sweep_cookie_copies(folder: Path | None = None) -> list[Path]:
    """Remove the private cookie folders under ``folder`` (the temporary folder) whose client is gone."""
    removed = []
    for candidate in Path(folder or tempfile.gettempdir()).glob(f"{COOKIE_FOLDER_PREFIX}*"):
        if candidate.is_dir() and not candidate.is_symlink() and _orphaned(candidate):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    if removed:
        log.info("removed %d cookie copy folder(s) left by killed YouTube workers", len(removed))
    return removed


def _orphaned(folder: Path) -> bool:
    """Whether no live client holds ``folder`` (another sweeper removing it meanwhile is no error)."""
    try:
        with (folder / OWNER_FILE).open("rb") as owner:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except BlockingIOError:
        return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        return time.time() - folder.stat().st_mtime > UNOWNED_GRACE_S
    except OSError:
        return False


def _stem(target: Path) -> Path:
    return target.with_suffix("") if target.suffix.lower() in MEDIA_SUFFIXES else target


def _temporaries(path: Path) -> Iterator[Path]:
    """yt-dlp's temporary names for ``path`` (``x.webm.part``, ``x.part.webm``, ``x.webm.ytdl``)."""
    yield path.with_name(path.name + ".part")
    yield path.with_name(path.name + ".ytdl")
    if path.suffix:
        yield path.with_name(f"{path.stem}.part{path.suffix}")


def _discard_leftovers(target: Path) -> None:
    """Delete the temporary files a killed or failed download of ``target`` may have left, whatever
    container it was (only yt-dlp's exact temporary names: other items' files are never touched)."""
    stem = _stem(target)
    for suffix in MEDIA_SUFFIXES:
        for leftover in _temporaries(stem.with_name(stem.name + suffix)):
            leftover.unlink(missing_ok=True)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: yt-dlp keeps the original in ``exc_info`` and ``cause``."""
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        exc_info = getattr(current, "exc_info", None)
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__,
                    exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None]


def _too_many_requests(error: BaseException) -> tuple[bool, float | None]:
    """Whether an HTTP 429 is behind ``error``, and the ``Retry-After`` it sent (seconds) if any."""
    for cause in _causes(error):
        response = getattr(cause, "response", None)
        if getattr(cause, "status", None) == 429 or getattr(response, "status", None) == 429:
            headers = getattr(response, "headers", None) or {}
            return True, parse_retry_after(headers.get("Retry-After"))
    return "http error 429" in str(error).lower(), None


def _retryable(failure: DownloadError, error: BaseException | None = None) -> DownloadError | Retryable:
    """``failure`` as a :class:`Retryable` when it is worth another attempt in this run."""
    if failure.reason in RETRIED_AT_ONCE:
        return Retryable(failure)
    if failure.reason == "rate_limited" and error is not None:
        throttled, retry_after = _too_many_requests(error)
        if throttled:
            return Retryable(failure, retry_after_s=retry_after)
    return failure


class _Messages:
    """yt-dlp's logger: keeps its errors for the failure detail and keeps its output off the console."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def info(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def warning(self, message: str) -> None:
        log.debug("yt-dlp warning: %s", message)

    def error(self, message: str) -> None:
        self.errors.append(message)


class YouTubeClient:
    """Segment downloads and searches for one worker (threads may share it: pacing is per client)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._next_start = 0.0
        sweep_cookie_copies()
        self._cookies = self._private_cookies(settings.youtube_cookies)

    def _private_cookies(self, cookies: Path | None) -> Path | None:
        if cookies is None:
            return None
        if not cookies.is_file():
            raise ValueError(f"youtube_cookies names {cookies}, which is not a file; export a Netscape "
                             "cookies.txt there or unset the setting.")
        folder = Path(tempfile.mkdtemp(prefix=COOKIE_FOLDER_PREFIX))
        owner = _hold(folder)
        weakref.finalize(self, _remove_copy, folder, owner)
        return Path(shutil.copy(cookies, folder / "cookies.txt"))

    def _pace(self) -> None:
        """Wait until ``youtube_sleep_s`` has passed since the previous request of this client started."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.settings.youtube_sleep_s
        time.sleep(start - now)

    def _common(self, messages: _Messages) -> dict[str, Any]:
        return {"quiet": True, "no_warnings": True, "noprogress": True, "cachedir": False, "logger": messages,
                "socket_timeout": self.settings.http_timeout_s,
                "cookiefile": str(self._cookies) if self._cookies else None}

    def _options(self, start_s: float, end_s: float, target: Path, messages: _Messages) -> dict[str, Any]:
        timeout_us = str(int(self.settings.http_timeout_s * 1_000_000))
        ffmpeg_input = ["-rw_timeout", timeout_us, "-reconnect", "1", "-reconnect_on_network_error", "1",
                        "-reconnect_on_http_error", "429,5xx",
                        "-reconnect_delay_max", str(int(self.settings.http_backoff_max_s))]
        return {
            **self._common(messages),
            "format": "bestaudio/best",
            "outtmpl": {"default": output_template(target)},
            "download_ranges": download_range_func(None, [(start_s, end_s)]),
            # Re-encode at the cuts: a stream copy starts at the keyframe before start_s (up to seconds early).
            "force_keyframes_at_cuts": True,
            "noplaylist": True,
            "overwrites": True,
            "retries": 3,
            "fragment_retries": 3,
            "extractor_retries": 1,
            "external_downloader_args": {"ffmpeg_i": ffmpeg_input},
        }

    def _retrying(self, attempt: Callable[[], T]) -> T:
        return with_retries(attempt, self.settings)

    def download_segment(self, video_id: str, start_s: float, end_s: float, target: Path) -> Segment:
        """Download ``[start_s, end_s]`` of the video's best audio to ``target`` with the real extension (a
        media suffix on ``target`` is replaced, anything else is kept: ``abc@30.5`` → ``abc@30.5.webm``).

        Retried at once as the module docstring says; raises ``DownloadError`` with the last reason. A
        returned segment is whole (see :class:`Segment`); nothing else is left at ``target``.
        """
        if not 0 <= start_s < end_s:
            raise ValueError(f"segment [{start_s}, {end_s}] of {video_id} is empty or negative")
        target.parent.mkdir(parents=True, exist_ok=True)
        _discard_leftovers(target)
        return self._retrying(lambda: self._attempt(video_id, start_s, end_s, target))

    def _attempt(self, video_id: str, start_s: float, end_s: float, target: Path) -> Segment:
        messages = _Messages()
        self._pace()
        try:
            with yt_dlp.YoutubeDL(self._options(start_s, end_s, target, messages)) as downloader:
                info = downloader.extract_info(video_url(self.settings, video_id), download=False, process=False)
                video_s = _seconds((info or {}).get("duration"))
                if video_s is not None and video_s <= start_s:
                    raise permanent("video_shorter", f"YouTube video {video_id} lasts {video_s:g} s, so it has "
                                    f"no segment from {start_s:g} s; skipped until forced.")
                info = downloader.process_ie_result(info, download=True)
        except yt_dlp.utils.YoutubeDLError as error:  # networking errors can escape unwrapped
            _discard_leftovers(target)
            raise _retryable(classify(str(error) or "\n".join(messages.errors), video_id), error) from error
        written = [Path(download["filepath"]) for download in (info or {}).get("requested_downloads", [])
                   if download.get("filepath")]
        if not written or not written[0].is_file() or written[0].stat().st_size == 0:
            for path in written:
                discard(path)
            raise _retryable(classify("postprocessing: yt-dlp reported success but wrote no audio file", video_id))
        return self._checked(video_id, start_s, end_s, written[0], video_s)

    def _checked(self, video_id: str, start_s: float, end_s: float, path: Path, video_s: float | None) -> Segment:
        """The segment at ``path`` if its decoded length covers ``[start_s, end_s]`` (or up to the video's
        stated end); else it is deleted and the attempt fails as a transient ``short_segment``."""
        try:
            seconds = segment_seconds(path)
        except AudioError as error:
            discard(path)
            raise _retryable(classify(f"postprocessing: ffmpeg cannot decode the segment ({error.detail})",
                                      video_id)) from None
        wanted = (min(end_s, video_s) if video_s is not None else end_s) - start_s
        if seconds < wanted - DURATION_TOLERANCE_S:
            discard(path)
            raise _retryable(DownloadError(
                "short_segment", f"YouTube video {video_id}: the segment {start_s:g}–{end_s:g} s came out "
                f"{seconds:.2f} s long, not {wanted:.2f} s. {_ADVICE['short_segment']}"))
        return Segment(path, seconds, video_s)

    def search(self, query: str) -> str | None:
        """The id of the first video a YouTube search for ``query`` finds, or ``None`` when it finds none.

        One flat extraction of ``search_url`` (no download), paced and retried like downloads. A search that
        still fails is transient (a bot check, a rate limit, the network): ``search_failed`` unless the
        classifier names a transient reason."""
        url = search_url(self.settings, query)

        def attempt() -> str | None:
            messages = _Messages()
            self._pace()
            options = {**self._common(messages), "extract_flat": "in_playlist", "skip_download": True,
                       "playlistend": 5}  # the first video among the first few results
            try:
                with yt_dlp.YoutubeDL(options) as downloader:
                    info = downloader.extract_info(url, download=False)
            except yt_dlp.utils.YoutubeDLError as error:  # networking errors can escape unwrapped
                raise _retryable(_search_failure(str(error) or "\n".join(messages.errors), query), error) from error
            return next(filter(None, map(_video_id, (info or {}).get("entries") or [])), None)

        return self._retrying(attempt)


def _search_failure(message: str, query: str) -> DownloadError:
    reason = classify(message, query).reason
    last = (message.strip().splitlines() or ["no message"])[-1].removeprefix("ERROR: ")
    return DownloadError(reason if reason in TRANSIENT else "search_failed",
                         f"a YouTube search for {query!r} failed ({last}); retried next run")


def _video_id(entry: Any) -> str | None:
    """The video id of one search result (its URL or id), ``None`` for a channel, a playlist or junk."""
    if not isinstance(entry, dict):
        return None
    for candidate in (entry.get("url"), entry.get("id")):
        if isinstance(candidate, str) and YoutubeIE.suitable(candidate):
            return YoutubeIE.extract_id(candidate)
    return None


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _hold(folder: Path) -> IO[bytes]:
    """Create and lock ``folder``'s owner file; the lock lasts as long as this process keeps it open."""
    temporary = folder / f"{OWNER_FILE}.new"
    owner = temporary.open("wb")
    fcntl.flock(owner, fcntl.LOCK_EX)
    temporary.rename(folder / OWNER_FILE)
    return owner


def _remove_copy(folder: Path, owner: IO[bytes]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    owner.close()
