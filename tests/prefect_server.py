"""A real ``prefect server start`` with real process workers, for tests that need the UI or deployments.

Unlike the session's ``prefect_test_harness`` (conftest), this is the server a user runs: its own
``PREFECT_HOME`` and SQLite database, the UI bundles, the background services, and workers that poll a
work pool and start flow runs as subprocesses. Everything is a child process in its own session so that
:meth:`PrefectServer.stop` can end it all, including flow-run processes that Prefect 3.8 starts in process
groups of their own (they are not in the worker's group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

PREFECT = [sys.executable, "-m", "prefect"]
"""The CLI of the interpreter running the tests, whatever ``PATH`` says."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def _sigint_default() -> None:
    """Runs in the child before exec: a process started from a non-interactive shell's background job
    inherits an ignored SIGINT, and a Prefect worker with SIGINT ignored does not stop on SIGINT or on
    its first SIGTERM (it turns SIGTERM into SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid``."""
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped
    except OSError:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _signal_orphan(pid: int, sig: int) -> None:
    """Signal a leftover descendant's whole group (a flow run leads its own), never the test's own group."""
    try:
        pgid = os.getpgid(pid)
        if pgid == os.getpgrp():
            os.kill(pid, sig)
        else:
            os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stop_process(process: subprocess.Popen, signals: list[tuple[int, float]], extra: list[int]) -> None:
    """Send each signal to the process's group and wait for it up to its grace period; then end the groups
    of ``extra`` (descendants seen earlier, in groups of their own) that are still alive."""
    reaped_before = process.returncode is not None  # then its pid, and so its group id, may be reused
    for sig, grace in signals:
        if process.poll() is not None:
            break
        _signal_group(process.pid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    if not reaped_before:
        _signal_group(process.pid, signal.SIGKILL)  # anything the leader left behind in its group
    process.wait()
    leftovers = [pid for pid in extra if _alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in leftovers:
            _signal_orphan(pid, sig)
        deadline = time.monotonic() + 3
        while (leftovers := [pid for pid in leftovers if _alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.05)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen, log: Path) -> None:
    """Poll ``condition`` until it holds; raise with the log's tail if the process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}; log {log}:\n{log_tail(log)}")
        try:
            if condition():
                return
        except (httpx.HTTPError, ValueError):  # not listening yet, or not answering JSON yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s; log {log}:\n{log_tail(log)}")


@dataclass
class Worker:
    """A ``prefect worker start`` process polling one work pool."""

    pool: str
    name: str
    process: subprocess.Popen
    log: Path
    _seen: list[int] = field(default_factory=list)

    def remember_descendants(self) -> None:
        """Record the worker's current subprocesses (flow runs live in groups of their own)."""
        self._seen.extend(pid for pid in descendants(self.process.pid) if pid not in self._seen)

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT (the worker's clean stop), then SIGTERM, then SIGKILL; flow runs it started end too."""
        self.remember_descendants()
        _stop_process(self.process, [(signal.SIGINT, grace), (signal.SIGTERM, 3.0)], self._seen)


class PrefectServer:
    """``prefect server start`` on a free loopback port with ``home`` as its ``PREFECT_HOME`` (so its own
    SQLite database), plus workers; a context manager that stops all of it.

    The UI needs ``PREFECT_SERVER_UI_API_URL``: ``--port`` does not reach the UI's settings, which
    otherwise tell the browser to call ``http://127.0.0.1:4200/api``.
    """

    def __init__(self, home: Path, port: int | None = None, startup_timeout: float = 90.0) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.log = self.home / "server.log"
        self.process: subprocess.Popen | None = None
        self.workers: list[Worker] = []

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a client, worker or CLI subprocess that talks to this server: the current one
        without ``MUSICTEXT_*`` (tests set their own), plus ``extra``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICTEXT_")}
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore",
            # Workers poll every second (default 10 s): the poll interval is what delays pick-up.
            PREFECT_WORKER_QUERY_SECONDS="1",
            # Look-ahead for runs scheduled in the future (the default); a run due now is picked up at
            # the next poll whatever this is.
            PREFECT_WORKER_PREFETCH_SECONDS="10",
        )
        env.update(extra)
        return env

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICTEXT_") and k != "PREFECT_API_URL"}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(self.port),
            PREFECT_SERVER_UI_API_URL=self.api_url,
        )
        return env

    def start(self) -> PrefectServer:
        """Launch the server and wait until it is healthy (raises with the log's tail otherwise)."""
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self._server_env(), cwd=self.home, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_sigint_default,
            )
        try:
            _wait_for(
                lambda: httpx.get(f"{self.api_url}/health", timeout=2).json() is True,
                self.startup_timeout, f"Prefect server on port {self.port}", self.process, self.log,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def workers_online(self, pool: str) -> list[str]:
        """Names of the pool's workers that the API reports ONLINE."""
        response = httpx.post(f"{self.api_url}/work_pools/{pool}/workers/filter", json={}, timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return [w["name"] for w in response.json() if w.get("status") == "ONLINE"]

    def start_worker(self, pool: str, name: str, env: dict[str, str] | None = None,
                     cwd: Path | str | None = None, timeout: float = 60.0) -> Worker:
        """``prefect worker start --pool POOL --name NAME --type process``, waited for until the API lists it
        ONLINE. ``env`` defaults to :meth:`env`; flow runs it starts inherit it and run in ``cwd``
        unless their deployment's pull steps say otherwise."""
        log = self.home / f"worker-{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", pool, "--name", name, "--type", "process"],
                env=env if env is not None else self.env(), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_sigint_default,
            )
        worker = Worker(pool, name, process, log)
        self.workers.append(worker)
        _wait_for(lambda: name in self.workers_online(pool), timeout, f"worker {name!r} on pool {pool!r}", process, log)
        return worker

    def stop(self) -> None:
        """Stop the workers (flow runs included), then the server: SIGTERM, then SIGKILL, by process group."""
        for worker in self.workers:
            worker.stop()
        if self.process is not None:
            server_children = descendants(self.process.pid)
            _stop_process(self.process, [(signal.SIGTERM, 15.0)], server_children)

    def survivors(self) -> list[str]:
        """``pid command`` of every process still running with this server's ``PREFECT_HOME`` in its
        environment (server, workers, flow runs, CLI calls); empty once :meth:`stop` has done its job."""
        marker = f"PREFECT_HOME={self.home}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                if marker in environ and _alive(int(entry.name)):
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{entry.name} {cmdline.strip()}")
            except OSError:
                continue
        return found

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
