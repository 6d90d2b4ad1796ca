"""The concurrency rule: two runs of one stage on one dataset never overlap; the second waits.

A scheduled ingestion, a run started from the UI and a CLI re-processing can all reach the same
dataset at once; two preprocess runs of it would work the same items twice and race on the same
status files. So every stage run holds a lock in the data root for its dataset (the embed stage one
per model: two models write different shards) for as long as it runs. The second run logs who it waits
for and then waits: when it starts, outputs say what is done, so it only works what the first left.

A lock in the data root rather than a Prefect global concurrency limit, because it holds in every mode
(two CLI runs on the embedded default share no server), and because the kernel releases it the moment
its holder dies: a Prefect slot held by a killed worker stays taken until its lease expires (60 s at
the least, and leases live in the server's memory by default, so a server restart leaks the slot).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.context import FlowRunContext

from store.atomic import locked, write_text_atomic
from store.layout import DataRoot


def _this_run() -> dict[str, str | int]:
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    return {"flow_run": run.name if run else "(no flow run)", "flow_run_id": str(run.id) if run else "",
            "host": socket.gethostname(), "pid": os.getpid(), "since": datetime.now(UTC).isoformat(timespec="seconds")}


@contextmanager
def one_run_at_a_time(root: DataRoot, stage: str, dataset: str) -> Iterator[None]:
    """Hold ``stage``'s lock on ``dataset`` for the block; wait, saying for whom, while another run has it."""
    target = root.lock(stage, dataset)
    holder = target.with_name(f"{target.name}.json")

    def say_who() -> None:
        try:
            other = json.loads(holder.read_text())
            who = f"flow run {other['flow_run']!r} (pid {other['pid']} on {other['host']}, since {other['since']})"
        except (OSError, ValueError, KeyError):
            who = "another run"
        get_run_logger().warning("%s of %s is already running in %s; this run waits for it to finish, then works "
                                 "what is left", stage, dataset, who)

    with locked(target, on_busy=say_who):
        write_text_atomic(holder, json.dumps(_this_run()))
        yield
