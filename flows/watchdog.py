"""A small process that ends a helper process once the command that started both has died, however it died.

A command that is SIGKILLed (by a user, a timeout or the out-of-memory killer) runs no cleanup at all, so
any process it started and meant to stop at exit (Prefect's temporary server) lives on. The watchdog is a
second child of the command, started right after the helper: it polls whether its own parent is still the
command (``os.getppid()``: when a process dies its children are handed to another parent at once), and
when not, ends the helper: SIGTERM, so it shuts down cleanly, and SIGKILL after :data:`GRACE_S`.

Why this design rather than the alternatives:

* ``prctl(PR_SET_PDEATHSIG)`` fires when the *thread* that started the child ends, not the process, and
  Prefect may start its server from a worker thread; it is also Linux only.
* A pid file cleaned up by the *next* run leaves the process running until there is a next run, and must
  guess whether a recorded pid still names the same process.
* Here the helper is identified by its pid *and* its start time, taken while it is the command's own
  unreaped child (so the pid cannot name anything else yet); psutil re-checks that identity before every
  signal, so a pid reused by an unrelated process is never touched. The parent check is race-free from the
  first instant: the command passes its pid, and a watchdog whose parent is already someone else knows the
  command died before it looked. It imports nothing but the standard library and psutil, so it is running
  within a fraction of a second.

Run as ``python -m flows.watchdog OWNER_PID HELPER_PID HELPER_START_TIME`` by :func:`start`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.2
"""How often the watchdog looks: how long a helper can outlive its command, plus its shutdown."""
GRACE_S = 10.0
"""How long the helper gets to shut down after SIGTERM before it is killed."""


def start(helper: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Start a watchdog that ends ``helper``, a child of this process, when this process dies."""
    started = psutil.Process(helper.pid).create_time()
    return subprocess.Popen(
        [sys.executable, "-m", "flows.watchdog", str(os.getpid()), str(helper.pid), repr(started)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def owner_died(owner: int, helper: psutil.Process) -> bool:
    """Wait until the owner is gone (True) or the helper has ended on its own (False)."""
    while _running(helper):
        if os.getppid() != owner:
            return True
        time.sleep(POLL_S)
    return False


def end(helper: psutil.Process) -> None:
    """SIGTERM, then SIGKILL after :data:`GRACE_S`; psutil refuses to signal a pid that now names another process.

    The helper is not the watchdog's child, so its end is polled for (an ended helper may stay a zombie
    until its new parent reaps it, which ``wait`` would take for still running)."""
    try:
        helper.terminate()
        deadline = time.monotonic() + GRACE_S
        while _running(helper) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if _running(helper):
            helper.kill()
    except psutil.NoSuchProcess:
        return


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the whole process group; the watchdog must outlive a command that then hangs or is killed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    owner, pid, started = int(argv[0]), int(argv[1]), float(argv[2])
    try:
        helper = psutil.Process(pid)
        ours = helper.create_time() == started
    except psutil.NoSuchProcess:
        return 0
    if ours and owner_died(owner, helper):
        end(helper)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
