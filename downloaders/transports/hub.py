"""Hugging Face Hub files (MusicCaps metadata, MusicBench) via ``huggingface_hub``, under our retry policy.

The endpoint is ``settings.hf_endpoint``, passed to every call (``endpoint=``), so a lab mirror or the test
mirror stands in without touching ``HF_ENDPOINT``. Revisions are pinned by the caller. The token comes
from ``HF_TOKEN`` in the environment when set (gated or private repos); it is handed to the library and
never shown: error details and the library's log records are scrubbed of it (``store.secrets``).
``hf_hub_download`` does not retry a 5xx or 429 on its metadata request, so each call is wrapped in the
transports' policy (``retry.py``); answers that will not change (missing repo, revision or file; refused
access) fail at once with a permanent reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from downloaders.transports.errors import DownloadError, permanent
from downloaders.transports.retry import Retryable, parse_retry_after, with_retries
from store.secrets import causes, scrub, scrubbed_logs
from store.settings import Settings

T = TypeVar("T")


def _token() -> str | bool:
    """``HF_TOKEN`` when set; otherwise False, so no token saved on this machine goes to a mirror."""
    return os.environ.get("HF_TOKEN") or False


def _classify(error: Exception, what: str) -> Exception:
    """What a library error means for us: a Retryable, a permanent DownloadError, or itself (a bug)."""
    for cause in causes(error):  # the library wraps the failed metadata request in a local-file error
        message = scrub(str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
        if isinstance(cause, GatedRepoError):
            return permanent("forbidden", f"{what}: the repo is gated ({message}); accept its conditions on "
                             "the Hub and set HF_TOKEN.")
        local = isinstance(cause, LocalEntryNotFoundError)
        missing = isinstance(cause, RevisionNotFoundError | RepositoryNotFoundError | EntryNotFoundError)
        if missing and not local:
            return permanent("not_found", f"{what}: {message}. Check the repo, the pinned revision and the "
                             "file name (a private repo also needs HF_TOKEN).")
        if isinstance(cause, FileMetadataError):
            return permanent("http_error", f"{what}: {message}")
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            return _from_status(cause, cause.response.status_code, what, message)
        if isinstance(cause, httpx2.TimeoutException):
            return Retryable(DownloadError("timeout", f"{what}: the Hub stopped answering on every attempt "
                                           f"({message}); retried next run."))
        if isinstance(cause, OSError) and cause.errno is not None and not local:
            return DownloadError("io_error", f"{what}: writing the file failed ({message}); check free "
                                 "space and permissions, retried next run.")
        # an OSError without errno is the library's "Consistency check failed" on a body cut short
        if isinstance(cause, httpx2.TransportError | OSError) and not local:
            return Retryable(DownloadError("connection_error", f"{what}: the connection to the Hub failed "
                                           f"on every attempt ({message}); retried next run."))
    return error


def _from_status(error: HfHubHTTPError, status: int, what: str, message: str) -> Exception:
    if status == 429:
        return Retryable(DownloadError("rate_limited", f"{what}: the Hub answered 429 (too many requests) on "
                                       "every attempt; retried next run."),
                         retry_after_s=parse_retry_after(error.response.headers.get("Retry-After")))
    if status >= 500:
        return Retryable(DownloadError("server_error", f"{what}: the Hub answered {status} on every attempt "
                                       f"({message}); retried next run."))
    if status in (401, 403):
        return permanent("forbidden", f"{what}: the Hub refused access ({message}); set HF_TOKEN for a "
                         "private or gated repo.")
    if status in (404, 410):
        return permanent("not_found", f"{what}: {message}.")
    return permanent("http_error", f"{what}: the Hub answered {status} ({message}).")


def _call(settings: Settings, what: str, call: Callable[[], T]) -> T:
    def attempt() -> T:
        try:
            with scrubbed_logs():
                return call()
        except Exception as error:  # noqa: BLE001  (classified; anything unknown is re-raised as it is)
            classified = _classify(error, what)
            if classified is error:
                raise
            raise classified from error

    return with_retries(attempt, settings)


def hub_files(settings: Settings, repo_id: str, *, revision: str, repo_type: str = "dataset") -> list[str]:
    """Every file in the repo at ``revision``, sorted: sources pick their files by pattern, since names
    change between revisions (MusicBench renamed its files)."""
    api = HfApi(endpoint=settings.hf_endpoint, token=_token())
    files = _call(settings, f"listing {repo_id}@{revision}",
                  lambda: api.list_repo_files(repo_id, revision=revision, repo_type=repo_type))
    return sorted(files)


def hub_download(settings: Settings, repo_id: str, filename: str, *, revision: str, target_dir: Path,
                 repo_type: str = "dataset") -> Path:
    """Download ``filename`` to ``target_dir/filename`` (the repo's own relative path). A file already
    there at this pinned commit returns without a request; one over ``max_download_bytes`` is refused
    before it is fetched."""
    target = (target_dir / filename).resolve()
    if not target.is_relative_to(target_dir.resolve()):
        raise permanent("unsafe_archive", f"{repo_id}: file name {filename!r} leaves the target folder.")
    what = f"{repo_id}@{revision}:{filename}"
    options = {"repo_type": repo_type, "revision": revision, "local_dir": target_dir,
               "endpoint": settings.hf_endpoint, "token": _token()}
    planned = _call(settings, what, lambda: hf_hub_download(repo_id, filename, dry_run=True, **options))
    size = planned.file_size or 0
    if planned.will_download and size > settings.max_download_bytes:
        raise permanent("too_large", f"{what} is {size:,} bytes, over the cap of "
                        f"{settings.max_download_bytes:,} bytes (max_download_bytes).")
    return Path(_call(settings, what, lambda: hf_hub_download(repo_id, filename, **options)))
