"""A real HTTP server on loopback that stands in for every origin the toolkit downloads from.

Static files answer GET and HEAD with ``Content-Length``, ``ETag``, ``Accept-Ranges`` and single byte
ranges (``If-Range`` honoured), so resumable downloads are exercised for real. Every request is logged
and may be hit by a fault (see :class:`Faults`).

The YouTube stand-in answers what yt-dlp's generic extractor reads the way the real site answers its own
extractor: a watch page (``/watch?v=<id>``) that states the video's duration and where its media is (a
schema.org ``VideoObject``), the media itself under ``/media/`` (read by ffmpeg in byte ranges, where
range faults land), a platform message in the status line of a video that is gone, and a search answer
(``/results?search_query=<query>``, an RSS list of watch links in rank order).
"""

from __future__ import annotations

import functools
import html
import json
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, quote_plus, unquote

from requests.structures import CaseInsensitiveDict

from mirror.faults import Faults
from mirror.hub import HubRepos
from mirror.resources import Answer, Resource
from processors.decode import probe_duration
from processors.errors import AudioError

MIRROR_KEYS = ("audioset", "audioset-ontology", "fma", "lastfm", "magnatagatune", "msd", "mtg-jamendo",
               "mtg-jamendo-meta")
"""Source host keys the ``mirror_settings`` fixture maps to ``{base_url}/{key}``."""
_MEDIA_TYPES = {"webm": "audio/webm", "m4a": "audio/mp4", "mp3": "audio/mpeg", "ogg": "audio/ogg",
                "opus": "audio/ogg", "wav": "audio/wav", "flac": "audio/flac"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    status: int
    """The status sent (0 when the connection was dropped before any)."""
    headers: CaseInsensitiveDict
    """Request headers, by any capitalisation (httpx sends lower case, requests title case)."""
    fault: str | None
    at: float
    """``time.monotonic()`` when the request arrived."""


class MirrorServer:
    def __init__(self) -> None:
        self.faults = Faults()
        self.requests: list[tuple[str, str, int]] = []
        self.log: list[Logged] = []
        self._files: dict[str, Resource] = {}
        self._answers: dict[str, Answer] = {}
        self._hub = HubRepos()
        self._lock = threading.Lock()
        self._servers = [_Server(("127.0.0.1", 0), _handler_for(self)) for _ in range(2)]
        self.base_url, self.cdn_url = (f"http://127.0.0.1:{port}" for _, port in self.addresses)
        """The CDN is another origin (another port), as the Hub's is, so clients treat its redirect alike."""

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [server.server_address[:2] for server in self._servers]

    def start(self) -> MirrorServer:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="mirror",
                             daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def url(self, path: str) -> str:
        return self.base_url + quote(path, safe="/?=&%")

    def host(self, key: str) -> str:
        """The base URL standing in for source host ``key`` (what ``mirrors[key]`` is set to)."""
        return f"{self.base_url}/{key}"

    def add(self, path: str, data: bytes | Path, *, content_type: str | None = None) -> str:
        """Serve ``data`` at ``path`` (which may carry a query, e.g. ``/watch?v=ID``), replacing whatever
        answered there before; returns its URL."""
        if not path.startswith("/"):
            raise ValueError(f"mirror paths start with '/': {path!r}")
        self._answers.pop(path, None)
        self._files[path] = Resource.of(data, content_type, name=path.rpartition("/")[2])
        return self.url(path)

    def hf_repo(self, repo_id: str, revision: str, files: Mapping[str, bytes | Path], *,
                repo_type: str = "dataset", lfs: Collection[str] = ()) -> str:
        """Serve a Hub repo at ``revision``; returns the commit hash its answers carry."""
        return self._hub.add(repo_id, revision, files, repo_type=repo_type, lfs=lfs)

    def media(self, video_id: str, audio: bytes | Path, *, ext: str = "webm", duration_s: float | None = None) -> str:
        """A video yt-dlp's generic extractor downloads from ``{base_url}/watch?v={video_id}``: a watch page
        stating ``duration_s`` (default: the media's own, as ffprobe reads it; none when it cannot) and the
        media at ``/media/<id>.<ext>``; returns the watch page's URL."""
        path = f"/media/{quote(video_id, safe='')}.{ext}"
        media = self.add(path, audio, content_type=_MEDIA_TYPES.get(ext, f"audio/{ext}"))
        seconds = _media_seconds(self._files[path]) if duration_s is None else duration_s
        video = {"@context": "https://schema.org", "@type": "VideoObject", "name": f"Video {video_id}",
                 "contentUrl": media, "uploadDate": "2017-03-05"}
        if seconds is not None:
            video["duration"] = f"PT{seconds:.3f}S"
        page = (f"<!DOCTYPE html><html><head><title>{html.escape(video_id)}</title>"
                f'<script type="application/ld+json">{json.dumps(video)}</script></head><body></body></html>')
        return self.add(f"/watch?v={video_id}", page.encode(), content_type="text/html; charset=utf-8")

    def search(self, query: str, video_ids: Sequence[str]) -> str:
        """Answer a YouTube search for ``query`` with ``video_ids`` in rank order (none: no result), at
        ``{base_url}/results?search_query=<query>`` (what ``youtube_search_url`` names here)."""
        items = "".join(f"<item><title>{html.escape(video_id)}</title>"
                        f"<link>https://www.youtube.com/watch?v={quote(video_id, safe='')}</link></item>"
                        for video_id in video_ids)
        feed = (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>'
                f"{html.escape(query)}</title><link>{self.base_url}/results</link>{items}</channel></rss>")
        path = f"/results?search_query={quote_plus(query)}"
        self.add(path, feed.encode(), content_type="application/rss+xml")
        return self.base_url + path

    def respond(self, path: str, status: int, *, message: str | None = None,
                headers: Mapping[str, str] | None = None) -> None:
        """Answer every request for ``path`` with ``status`` (a 404, a 403, a 503 that never ends);
        ``message`` becomes the status line's text and the body."""
        reason = None if message is None else message.replace("\u2019", "'").splitlines()[0]
        body = (message or "").encode()
        latin = None if reason is None else reason.encode("latin-1", "replace").decode("latin-1")
        self._answers[path] = Answer(status, headers=dict(headers or {}), body=body, reason=latin)

    def unavailable(self, video_id: str, message: str, *, status: int = 404) -> None:
        """Answer like a video that is gone: the status line carries ``message``, which yt-dlp reports as
        ``HTTP Error <status>: <message>`` (the way the real site's reasons reach the classifier)."""
        self.respond(f"/watch?v={video_id}", status, message=message)

    def environment(self) -> dict[str, str]:
        """``MUSICTEXT_*`` variables pointing every origin at this server (for subprocesses too)."""
        return {
            "MUSICTEXT_MIRRORS": json.dumps({key: self.host(key) for key in MIRROR_KEYS}),
            "MUSICTEXT_HF_ENDPOINT": self.base_url,
            "MUSICTEXT_YOUTUBE_URL": f"{self.base_url}/watch?v=",
            "MUSICTEXT_YOUTUBE_SEARCH_URL": f"{self.base_url}/results?search_query=",
            "MUSICTEXT_YOUTUBE_SLEEP_S": "0",
            "MUSICTEXT_HTTP_TIMEOUT_S": "2",
        }

    def answer(self, path: str) -> Answer:
        """What a request for ``path`` gets, before faults."""
        corrupt = self.faults.corrupt.get(path)
        if corrupt is not None:
            return Answer(200, resource=Resource.of(corrupt, name=path))
        if path in self._answers:
            return self._answers[path]
        resource = self._files.get(path) or self._files.get(unquote(path))
        if resource is not None:
            return Answer(200, resource=resource)
        hub = self._hub.answer(path, self.cdn_url)
        return hub or Answer(404, body=f"{path} is not on this mirror".encode())

    def record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)
            self.requests.append((entry.method, entry.path, entry.status))

    def requests_for(self, path: str) -> list[Logged]:
        return [entry for entry in self.log if entry.path == path]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (as clients under injected faults do) is no error of the mirror's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(mirror: MirrorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.mirror = mirror
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mirror: MirrorServer

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def log_message(self, format: str, *args: object) -> None:
        """Requests go to ``mirror.log``, not stderr."""

    def _serve(self, *, body: bool) -> None:
        self._arrived = time.monotonic()
        self._fault = self.mirror.faults.draw(self.path, ranged="Range" in self.headers)
        try:
            self._respond(body=body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _record(self, status: int) -> None:
        """Log the request before the client can see its answer, so a test never reads a stale log."""
        headers = CaseInsensitiveDict(self.headers.items())
        self.mirror.record(Logged(self.command, self.path, status, headers, self._fault, self._arrived))

    def _respond(self, *, body: bool) -> None:
        if self._fault in ("500", "503"):
            self._send(Answer(int(self._fault), body=b"injected server error"), body=body)
            return
        if self._fault == "429":
            retry_after = f"{self.mirror.faults.retry_after_s:g}"
            self._send(Answer(429, headers={"Retry-After": retry_after}, body=b"slow down"), body=body)
            return
        answer = self.mirror.answer(self.path)
        if self._fault in ("drop", "stall") and (not body or not (answer.resource or answer.body)):
            self._record(0)
            self._drop()
            return
        self._send(answer, body=body, fault=self._fault)

    def _send(self, answer: Answer, *, body: bool, fault: str | None = None) -> None:
        resource = answer.resource or Resource(data=answer.body, content_type=answer.content_type)
        status, start, stop, headers = self._range(answer, resource)
        self._record(status)
        self.send_response(status, answer.reason)
        headers.setdefault("Content-Type", resource.content_type)
        headers["Content-Length"] = str(stop - start)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self._body(resource, start, stop, fault)

    def _range(self, answer: Answer, resource: Resource) -> tuple[int, int, int, dict[str, str]]:
        """Status, byte span and headers: the whole resource, or the one range asked for."""
        headers = dict(answer.headers)
        if answer.resource is None or answer.status != 200:
            return answer.status, 0, resource.size, headers
        headers.setdefault("ETag", resource.etag)
        headers["Accept-Ranges"] = "bytes"
        wanted = _RANGE.match(self.headers.get("Range", "").strip())
        if_range = self.headers.get("If-Range")
        if wanted is None or (if_range is not None and if_range != headers["ETag"]):
            return 200, 0, resource.size, headers
        first, last = wanted.groups()
        if first:
            start, stop = int(first), min(int(last) + 1 if last else resource.size, resource.size)
        else:
            start, stop = max(resource.size - int(last or 0), 0), resource.size
        if start >= resource.size or start >= stop:
            headers["Content-Range"] = f"bytes */{resource.size}"
            return 416, 0, 0, headers
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{resource.size}"
        return 206, start, stop, headers

    def _body(self, resource: Resource, start: int, stop: int, fault: str | None) -> None:
        half = self.mirror.faults.cut_point(start, stop) if fault in ("drop", "stall") else stop
        self._write(resource, start, half)
        if fault == "drop":
            self._drop()
            return
        if fault == "stall":
            time.sleep(self.mirror.faults.stall_s)
        self._write(resource, half, stop)

    def _write(self, resource: Resource, start: int, stop: int) -> None:
        if stop <= start:
            return
        if resource.path is not None:
            with resource.path.open("rb") as handle:
                self.connection.sendfile(handle, start, stop - start)
            return
        for block in resource.blocks(start, stop):
            self.wfile.write(block)

    def _drop(self) -> None:
        """Close the connection now, mid-answer: the client sees an early end of the body."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


@functools.cache
def _media_seconds(resource: Resource) -> float | None:
    """The duration a media file's header states (a watch page says how long its video is); ``None`` for
    bytes that are no media."""
    with tempfile.NamedTemporaryFile(suffix=".media") as handle:
        if resource.path is None:
            handle.write(resource.data or b"")
            handle.flush()
        try:
            return probe_duration(resource.path or Path(handle.name))
        except AudioError:
            return None
