"""Credentials out of every text a user or a log sees: error messages, log records, tracebacks.

Servers echo what they were sent (a Hub error body quoting the ``Authorization`` header, a mirror logging
the request), and libraries put those answers into their exception text and their warnings. So anything
that came back from a remote and is about to be shown or logged goes through :func:`scrub`, and code that
talks to such a server runs under :func:`scrubbed_logs`. Two nets, because one alone misses:

* the values of the credentials this process holds (``HF_TOKEN`` and the other variables in
  :data:`SECRET_VARIABLES`, and the token ``hf auth login`` saved), whatever they look like;
* anything shaped like a credential even when its value is unknown here: an ``Authorization`` header in
  any quoting, ``Bearer …``, a Hugging Face token (``hf_…``), a password in a URL.

It lives in ``store`` because downloaders, embedders and flows all talk to remote servers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

REDACTED = "<redacted>"
SECRET_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PREFECT_API_KEY")
"""Environment variables whose values are credentials."""
_MIN_SECRET = 8
"""Shorter values are not real credentials, and replacing them everywhere would garble messages."""
_SHAPES = (
    # Authorization: Bearer x / 'authorization': 'Bearer x' / "Authorization"="Basic x"
    (re.compile(r"""(?i)(\bauthorization\b["']?\s*[:=]\s*["']?)(?:(?:bearer|basic|token)\s+)?[^\s"',;}]+"""),
     rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer)\s+[\w.~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),
)


def known_secrets() -> list[str]:
    """The credentials this process may send: the variables' values and the Hub token saved on this machine."""
    from huggingface_hub import get_token  # imported here: most commands never talk to the Hub

    values = [os.environ.get(name, "") for name in SECRET_VARIABLES] + [get_token() or ""]
    return sorted({value for value in values if len(value) >= _MIN_SECRET}, key=len, reverse=True)


def causes(error: BaseException) -> list[BaseException]:
    """The error and every error it was raised from or during, in order: what a traceback would show, so each
    must be scrubbed before any of it is shown (libraries wrap a failed request in errors of their own)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def scrub(text: str) -> str:
    """``text`` with every known credential and everything shaped like one replaced by ``<redacted>``."""
    for secret in known_secrets():
        text = text.replace(secret, REDACTED)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


_installed = threading.Lock()
_depth = 0
_previous: Callable[..., logging.LogRecord] = logging.LogRecord


@contextlib.contextmanager
def scrubbed_logs() -> Iterator[None]:
    """Every log record created inside the block, in any logger and thread, is scrubbed as it is made.

    Scrubbing at creation (a log record factory), not in a handler's filter, covers every handler that will
    ever see the record, including ones added by Prefect or pytest. A record's exception is rendered and
    scrubbed into its text once, and the exception object dropped, so no handler formats the raw one.
    Blocks may overlap in several threads: the factory is installed by the first and removed by the last.
    """
    global _depth, _previous
    with _installed:
        if _depth == 0:
            _previous = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_scrubbed_record)
        _depth += 1
    try:
        yield
    finally:
        with _installed:
            _depth -= 1
            if _depth == 0:
                logging.setLogRecordFactory(_previous)


def _scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    return _scrub_record(_previous(*args, **kwargs))


def _scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the format: keep both, as logging would show
        message = f"{record.msg} {record.args}"
    record.msg, record.args = scrub(message), None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    return record
