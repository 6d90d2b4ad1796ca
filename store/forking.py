"""Making forked DataLoader workers safe to exit in a process that runs Prefect.

A DataLoader worker is a fork of the calling process (a fork starts in 0.1 s; a forkserver or spawn start
re-imports the caller's main module, seconds per loader) and inherits its thread-exit hooks. A flow process
has Prefect's among them, and Prefect 3.8 resets its services after a fork but still drains them at exit,
which fails an assertion there: the worker exits with 1 and the DataLoader raises after the work is done.
Workers never use Prefect, so they drop the hooks they inherited.
"""

from __future__ import annotations

import threading


def forget_inherited_exit_hooks(_worker_id: int) -> None:
    """``worker_init_fn`` for every DataLoader with worker processes."""
    hooks = getattr(threading, "_threading_atexits", None)
    if hooks is not None:
        hooks.clear()
