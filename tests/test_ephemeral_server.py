"""Prefect's temporary server ends with the ``musictext`` command that started it, even a SIGKILLed one.

These run the real CLI as a subprocess *without* ``PREFECT_API_URL`` (unlike the rest of the suite, which
shares one server), so that it starts Prefect's temporary server, and find that server among its children.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flows import watchdog

MUSICTEXT = str(Path(sys.executable).with_name("musictext"))
SERVER_APP = "prefect.server.api.server:create_app"


@pytest.fixture()
def ingest(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``musictext ingest synthetic`` running with no Prefect server configured; its session is killed after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "MUSICTEXT_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), MUSICTEXT_CONFIG=os.devnull)
    cli = subprocess.Popen([MUSICTEXT, "ingest", "synthetic", "--limit", "2", "--root", str(tmp_path / "data")],
                           env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield cli
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever the test saw, nothing it started outlives it
            os.killpg(cli.pid, signal.SIGKILL)
        cli.wait()
        cli.stderr.close()


def listening_server(cli: subprocess.Popen[bytes], timeout: float = 120) -> list[psutil.Process]:
    """The command's temporary server, once it listens, then every other child (the watchdog)."""
    parent = psutil.Process(cli.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and cli.poll() is None:
        children = parent.children()
        server = next((child for child in children if SERVER_APP in " ".join(command_line(child))), None)
        if server and any(c.status == psutil.CONN_LISTEN for c in server.net_connections("tcp")):
            return [server, *(child for child in children if child != server)]
        time.sleep(0.1)
    raise AssertionError(f"no temporary server came up: {cli.stderr.read().decode()[-2000:] if cli.poll() else ''}")


def command_line(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # ended meanwhile
        return []


def test_a_killed_command_leaves_no_server_behind(ingest: subprocess.Popen[bytes]) -> None:
    started = listening_server(ingest)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ingest.send_signal(signal.SIGKILL)  # the command alone, as `kill -9` or the OOM killer would
        ingest.wait()
        killed_at = time.monotonic()

        gone, alive = psutil.wait_procs(started, timeout=watchdog.GRACE_S + 5)

        assert not alive, f"left running after the command was killed: {alive}"
        assert time.monotonic() - killed_at < watchdog.GRACE_S + 5
        assert bystander.poll() is None and psutil.Process(os.getpid()).is_running()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_finished_command_leaves_neither_server_nor_watchdog(ingest: subprocess.Popen[bytes]) -> None:
    started = listening_server(ingest)

    assert ingest.wait(timeout=240) == 0, ingest.stderr.read().decode()[-3000:]

    assert [" ".join(command_line(child)) for child in started if child.is_running()] == []


def sleeper() -> tuple[subprocess.Popen[bytes], float]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    return process, psutil.Process(process.pid).create_time()


def test_the_watchdog_ends_its_helper_at_once_when_the_owner_is_already_gone() -> None:
    """Its parent is not the owner it was told (as when the command died before the watchdog looked)."""
    helper, started = sleeper()
    try:
        guard = subprocess.run([sys.executable, "-m", "flows.watchdog", "1", str(helper.pid), repr(started)],
                               timeout=30)
        assert guard.returncode == 0
        assert helper.wait(timeout=5) == -signal.SIGTERM
    finally:
        helper.kill()
        helper.wait()


def test_the_watchdog_never_signals_a_process_that_is_not_its_helper() -> None:
    """A pid whose start time differs from the one recorded names another process (the pid was reused)."""
    bystander, started = sleeper()
    try:
        guard = subprocess.run([sys.executable, "-m", "flows.watchdog", "1", str(bystander.pid), repr(started - 5)],
                               timeout=30)
        assert guard.returncode == 0
        time.sleep(watchdog.POLL_S * 3)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
