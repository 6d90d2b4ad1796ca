"""Screenshots and rendered text of the Prefect UI with Debian's headless ``chromium`` (no browser download,
no Playwright or Selenium).

The UI is a single-page app: the HTML the server sends is an empty shell, so :func:`capture` lets Chromium
run the page's JavaScript for ``--virtual-time-budget`` milliseconds of *virtual* time (the clock only
advances while nothing is loading, so the API calls the page makes finish first) before it writes the
PNG or dumps the DOM. On a 2-core machine one call takes about 3-4 s of wall time, most of it Chromium's
own start-up.

Prefect 3.8 serves two UIs: the default V2 (React) under ``/v2`` and V1 (Vue) under ``/``. The
flow-run page is ``/v2/runs/flow-run/<id>``; ``?tab=Artifacts`` opens its Artifacts tab, which shows each
artifact's type, key and description. V1's ``/runs/flow-run/<id>?tab=Artifacts`` does not open that tab
in headless Chromium, so use :func:`flow_run_url`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
    "--hide-scrollbars",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
]
def flow_run_url(ui_url: str, flow_run_id: str, tab: str = "Artifacts") -> str:
    """The V2 UI's page of one flow run, on one tab (Logs, TaskRuns, SubflowRuns, Artifacts, Details,
    Parameters, JobVariables)."""
    return f"{ui_url.rstrip('/')}/v2/runs/flow-run/{flow_run_id}?tab={tab}"


def chromium() -> str:
    """Path of the ``chromium`` binary; a clear error if it is not installed."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    raise FileNotFoundError("chromium is not installed: apt-get install -y chromium (Debian's package, ~430 MB)")


def _run(what: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run Chromium with a throw-away profile (``--user-data-dir`` in a temp dir, never ``~/.config``) in a
    session of its own, so a timeout kills its renderer and GPU processes too."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TimeoutError(f"chromium {what} took more than {timeout:.0f} s") from None
    if process.returncode != 0:
        tail = err.decode(errors="replace")[-3000:]
        raise RuntimeError(f"chromium {what} failed ({process.returncode}):\n{tail}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def capture(url: str, png: Path, *, width: int = 1600, height: int = 1000, wait_ms: int = 5000,
            timeout: float = 90.0) -> str:
    """A ``width`` x ``height`` PNG of ``url`` and the page's visible text, after its JavaScript ran for
    ``wait_ms`` of virtual time, from one Chromium run."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    result = _run(f"screenshot+dump-dom {url}", [f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}",
                                                 f"--screenshot={png}", "--dump-dom", url], timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url} to {png}")
    return html_text(result.stdout.decode(errors="replace"))


class _Text(HTMLParser):
    """Visible text: everything but ``<script>``, ``<style>``, ``<noscript>`` and ``<template>`` bodies."""

    _HIDDEN = {"script", "style", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in self._HIDDEN

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in self._HIDDEN and self._hidden > 0

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.parts.append(data.strip())


def html_text(html: str) -> str:
    """The text of an HTML document, one space between text nodes."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return " ".join(parser.parts)


def png_colours(png: Path) -> tuple[int, int, int]:
    """``(width, height, number of distinct colours)`` of a PNG (Pillow comes with matplotlib, in the train
    extra); a blank page has one colour."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    height, width, _ = pixels.shape
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    return width, height, len(np.unique(packed))
