"""No Hugging Face token in anything a command prints or logs, whatever the Hub echoes back.

A loopback stand-in for the Hub answers every request with an error that repeats the request's
``Authorization`` header in the body, in ``X-Error-Message`` (which huggingface_hub puts into its error
text), in ``X-HF-Warning`` (which huggingface_hub logs) and in a header of its own. ``musictext models
fetch`` runs against it as a real process with a canary token; the canary must reach the server (so the
test is real) and must appear nowhere in what the command prints.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from embedders.mert import WEIGHTS as MERT
from embedders.weights import WeightsFetchError, fetch_weights
from store.secrets import scrub, scrubbed_logs

MUSICTEXT_WITH_SHORT_RETRIES = textwrap.dedent("""
    import sys, time
    import huggingface_hub.utils._http as http

    class ShortSleeps:  # huggingface_hub waits 1+2+4+8+8 s retrying a 5xx or a refused connection
        sleep = staticmethod(lambda seconds: time.sleep(min(seconds, 0.01)))
        def __getattr__(self, name): return getattr(time, name)

    http.time = ShortSleeps()
    from flows.cli import app
    sys.argv[0] = "musictext"
    app()
""")


class EchoHub(ThreadingHTTPServer):
    """Answers every request with ``status`` and the request's credentials repeated back."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.status = 401
        self.seen: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class EchoHandler(BaseHTTPRequestHandler):
    server: EchoHub

    def _echo(self) -> None:
        sent = self.headers.get("Authorization", "")
        self.server.seen.append(sent)
        body = json.dumps({"error": f"rejected Authorization: {sent} for {self.path}"}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Message", f"your header was Authorization: {sent}")
        self.send_header("X-HF-Warning", f"auth; the token {sent.removeprefix('Bearer ')} looks odd")
        self.send_header("X-Echo-Authorization", sent)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = _echo

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the library's signature)
        """Quiet: the test reads ``server.seen`` instead."""


@pytest.fixture()
def echo_hub() -> Iterator[EchoHub]:
    server = EchoHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def canary() -> str:
    return "hf_canary" + secrets.token_hex(13)


def fetch_env(hub_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the Hub at ``hub_url``, no saved token of this machine, no settings file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICTEXT_", "HF_", "HUGGING_FACE"))}
    env.update(MUSICTEXT_CONFIG=os.devnull, MUSICTEXT_HF_ENDPOINT=hub_url, HF_ENDPOINT=hub_url,
               HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="5",
               HF_HUB_DOWNLOAD_TIMEOUT="5", HF_DEBUG="1")
    return env


def fetch(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``musictext models fetch mert`` in its own process, as a user runs it; only the library's retry
    waits are cut short."""
    command = [sys.executable, "-c", MUSICTEXT_WITH_SHORT_RETRIES, "models", "fetch", "mert",
               "--cache-dir", str(tmp_path / "cache")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_fetch_never_prints_the_token_the_hub_echoes(echo_hub: EchoHub, tmp_path: Path, status: int) -> None:
    token = canary()
    echo_hub.status = status
    env = fetch_env(echo_hub.url, tmp_path) | {"HF_TOKEN": token}

    result = fetch(env, tmp_path)

    assert f"Bearer {token}" in echo_hub.seen  # the token went out and came back in every echo
    output = result.stdout + result.stderr
    assert token not in output, output
    assert token[len("hf_"):] not in output
    assert result.returncode == 2, output
    assert "Traceback" not in output
    message = " ".join(result.stderr.split())
    assert "could not fetch the MERT-v1-330M weights" in message, message
    assert echo_hub.url in message and str(status) in message


def test_a_saved_token_of_any_shape_is_not_printed_either(echo_hub: EchoHub, tmp_path: Path) -> None:
    """The token `hf auth login` saved (not HF_TOKEN), shaped unlike a Hub token, so only knowing it hides it."""
    token = "Saved-" + secrets.token_urlsafe(24)
    env = fetch_env(echo_hub.url, tmp_path)
    (tmp_path / "hf-home").mkdir()
    (tmp_path / "hf-home" / "token").write_text(token)

    result = fetch(env, tmp_path)

    assert f"Bearer {token}" in echo_hub.seen
    assert token not in result.stdout + result.stderr
    assert result.returncode == 2


def test_an_unreachable_hub_is_a_clear_error(tmp_path: Path) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler) as closed:
        url = f"http://127.0.0.1:{closed.server_address[1]}"
    env = fetch_env(url, tmp_path) | {"HF_TOKEN": canary()}

    result = fetch(env, tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "could not reach" in " ".join(result.stderr.split())


def test_the_fetch_error_shows_no_credential_even_as_a_traceback(
        echo_hub: EchoHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's error chain quotes the echo; the error raised instead is scrubbed and cut from it."""
    token = canary()
    monkeypatch.setenv("HF_TOKEN", token)

    with pytest.raises(WeightsFetchError) as failed:
        fetch_weights(MERT, endpoint=echo_hub.url, cache_dir=tmp_path)

    assert f"Bearer {token}" in echo_hub.seen
    shown = "".join(traceback.format_exception(failed.value))
    assert token not in shown and "the Hub answered 401" in shown


@pytest.mark.parametrize("text", [
    "Authorization: Bearer {t}",
    "{{'authorization': 'Bearer {t}', 'accept': '*/*'}}",
    '{{"Authorization": "Bearer {t}"}}',
    "curl -H 'authorization: {t}' https://hub",
    "token {t} rejected",
    "https://user:{t}@mirror.example/api",
])
def test_scrub_hides_credentials_in_every_shape(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    token = canary()
    monkeypatch.delenv("HF_TOKEN", raising=False)  # by shape alone, not because the value is known

    scrubbed = scrub(text.format(t=token))

    assert token not in scrubbed and token[len("hf_"):] not in scrubbed
    assert "<redacted>" in scrubbed


def test_scrub_hides_known_tokens_of_any_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.token_urlsafe(20)
    monkeypatch.setenv("HF_TOKEN", token)

    assert scrub(f"the server said {token}!") == "the server said <redacted>!"


def test_scrubbed_logs_hide_tokens_in_messages_arguments_and_tracebacks(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    token = secrets.token_urlsafe(20)
    monkeypatch.setenv("HF_TOKEN", token)
    logger = logging.getLogger("huggingface_hub.utils._http")
    caplog.set_level(logging.DEBUG)

    with scrubbed_logs():
        logger.warning("HTTP Error thrown with Authorization: %s", token)
        try:
            raise RuntimeError(f"echoed {token}")
        except RuntimeError:
            logger.exception("failed")
    logger.warning("after: %s", "plain")

    assert token not in caplog.text
    assert "echoed <redacted>" in caplog.text and "after: plain" in caplog.text
    assert logging.getLogRecordFactory() is logging.LogRecord
