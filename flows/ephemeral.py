"""Prefect's temporary server ends with the command that started it, even a SIGKILLed one.

With no ``PREFECT_API_URL``, Prefect starts a temporary API server as a subprocess (``SubprocessASGIServer``,
about 230 MB, listening on loopback) and stops it at exit. A command killed outright runs no exit code, so
the server stayed behind, every time. :class:`WatchedServer` is Prefect's server with one change: each
server process it starts gets a :mod:`flows.watchdog` beside it, which ends the server within a fraction of
a second of the command's death. It takes the place of Prefect's default instance the way Prefect's own
test harness does (``SubprocessASGIServer._instances[None]``), so every Prefect client in the process
uses it. Importing this module loads Prefect's server (seconds): import it only where the server will run.
"""

from __future__ import annotations

import subprocess

from prefect.server.api.server import SubprocessASGIServer

from flows import watchdog


class WatchedServer(SubprocessASGIServer):
    """Prefect's temporary server, each of its processes watched by a :mod:`flows.watchdog`."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        if not hasattr(self, "watchdogs"):  # Prefect re-runs __init__ on every lookup of the shared instance
            self.watchdogs: list[subprocess.Popen[bytes]] = []

    def _run_uvicorn_command(self) -> subprocess.Popen[bytes]:
        """Prefect's start of one server process (again on a port clash), with its watchdog right after."""
        server = super()._run_uvicorn_command()
        self.watchdogs.append(watchdog.start(server))
        return server

    def stop(self) -> None:
        """Prefect's stop; then each watchdog, which sees its server gone and exits, is waited for."""
        super().stop()
        for guard in self.watchdogs:
            try:
                guard.wait(watchdog.GRACE_S)
            except subprocess.TimeoutExpired:
                guard.kill()
                guard.wait()
        self.watchdogs.clear()


def watch_temporary_server() -> None:
    """Make the temporary server this process will start a :class:`WatchedServer`.

    A no-op when a server instance is already registered (one is running, or a test harness put its own).
    """
    if None not in SubprocessASGIServer._instances:
        WatchedServer()
