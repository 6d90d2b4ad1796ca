"""Shared fixtures. Flow tests share one Prefect test server per session (starting one costs 7–14 s)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from mirror import MirrorServer, fast_library_sleeps

import flows  # noqa: F401  (sets Prefect's offline defaults before Prefect is imported)
from store.settings import Settings, load_settings


@pytest.fixture(autouse=True, scope="session")
def prefect_logs_to_real_stderr() -> None:
    """Import Prefect, which binds its log handlers to ``sys.stderr``, before any CliRunner swaps that stream: the CLI
    imports Prefect only inside its commands, and handlers bound to one invocation's captured stream fail on every
    later invocation ("I/O operation on closed file")."""
    import prefect.main  # noqa: F401  (its import sets up the handlers)


FAILED_MODULES = pytest.StashKey[set[str]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    report = yield
    if report.failed:
        item.config.stash.setdefault(FAILED_MODULES, set()).add(item.nodeid.split("::")[0])
    return report


@pytest.fixture(autouse=True, scope="module")
def a_passing_modules_files_go_with_it(request: pytest.FixtureRequest,
                                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What a module left under the session's temporary folder (module-scoped corpora and training runs included)
    goes when the module ends with no failure, as pyproject's retention policy does for a passing test's own
    folder: kept to the end, the training modules' checkpoints of a real encoder add up to GBs of disk."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.node.nodeid not in request.config.stash.get(FAILED_MODULES, set()):
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect API on loopback with its own temporary database; yields its URL for subprocesses."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90), \
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield PREFECT_API_URL.value()


@pytest.fixture()
def cli_env(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for running the ``musictext`` CLI in a subprocess against the session's server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICTEXT_")}
    env["PREFECT_API_URL"] = prefect_server
    env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    env["MUSICTEXT_CONFIG"] = os.devnull
    return env




@pytest.fixture()
def mirror() -> Iterator[MirrorServer]:
    """A loopback mirror of every origin (``tests/mirror``), started for one test."""
    with MirrorServer() as server:
        yield server


@pytest.fixture()
def mirror_settings(
    mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings whose origins (source mirrors, Hub endpoint, YouTube URL) are the ``mirror``, set through
    ``MUSICTEXT_*`` variables so code that loads its own settings sees them too; no pacing, a short
    timeout and millisecond retry backoff, so fault tests stay fast."""
    fast_library_sleeps(monkeypatch)
    for name in [name for name in os.environ if name.startswith("MUSICTEXT_")]:
        monkeypatch.delenv(name)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MUSICTEXT_CONFIG", os.devnull)
    monkeypatch.setenv("MUSICTEXT_ROOT", str(tmp_path_factory.mktemp("data")))
    for name, value in mirror.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MUSICTEXT_HTTP_BACKOFF_S", "0.01")
    monkeypatch.setenv("MUSICTEXT_HTTP_BACKOFF_MAX_S", "0.05")
    return load_settings()
