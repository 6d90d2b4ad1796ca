"""Killing a CLI run part-way, for the kill-and-resume tests of every stage."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def run_until(args: list[str], env: dict[str, str], ready: Callable[[], bool], timeout: float = 240) -> bool:
    """Start the CLI, SIGKILL its process group as soon as ``ready()`` holds; False if it finished first."""
    process = subprocess.Popen(args, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    process.kill()
    process.wait()
    return False


def count_files(directory: Path, pattern: str) -> int:
    return sum(1 for _ in directory.glob(pattern)) if directory.exists() else 0


def leftovers(root: Path) -> list[Path]:
    """Temporary files a run left behind; a resumed run must leave none."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]
