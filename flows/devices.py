"""Where the embed stage runs a model, and the loaded model its work units reuse.

A weight-bearing model is loaded once per process and device, not once per work unit: loading MERT or
MuQ-MuLan takes seconds to minutes and gigabytes. With one device (one GPU, or the CPU) the units run
one after another in the flow's own process, on the model loaded there. With several GPUs each gets
its own process: a Prefect process-pool task runner with one worker per device, whose initializer
hands every worker a different device; units go to whichever worker is free, so the parts are
disjoint and balanced, and each unit is still a task run with its logs in the UI. Processes, not
threads, so that the Python side of one GPU's batches (kernel launches, collation) never waits for
another's GIL.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from embedders import embedder_spec, get_embedder
from embedders.base import Embedder
from embedders.weights import locate_weights

_process_device: str | None = None
"""The device this process's worker claimed (set in process-pool workers only)."""


def embed_devices(configured: list[str]) -> list[str]:
    """``configured`` if given, else every visible GPU, else the CPU."""
    if configured:
        return list(configured)
    try:
        import torch
    except ModuleNotFoundError:
        return ["cpu"]
    return [f"cuda:{index}" for index in range(torch.cuda.device_count())] or ["cpu"]


@lru_cache(maxsize=2)
def loaded_embedder(model: str, weights: str | None, device: str, precision: str = "reference") -> Embedder:
    """The embedder, loaded once per (model, weights, device, precision) in this process."""
    return get_embedder(model, weights=Path(weights) if weights else None, device=device, precision=precision)


def check_weights(model: str, weights: str | None) -> None:
    """Raise :class:`embedders.weights.MissingWeightsError` now, before any work, if they are not here."""
    spec = embedder_spec(model).weights
    if spec is not None:
        locate_weights(spec, Path(weights) if weights else None)


def unit_device(device: str | None) -> str:
    """The device a unit runs on: the one it was given, or the one its process-pool worker claimed."""
    return device or _process_device or "cpu"


def claim_device(devices: Any) -> None:
    """Process-pool initializer: take one device from the queue shared by the pool's workers."""
    global _process_device
    _process_device = devices.get_nowait()


@contextmanager
def device_runner(devices: list[str]) -> Iterator[TaskRunner]:
    """A started task runner that runs one unit per device at a time (see the module docstring).

    The queue of devices is closed afterwards: left open, its finalizer would run again in every process
    later forked from this one (a DataLoader's workers among them) and fail there."""
    if len(devices) == 1:
        with ThreadPoolTaskRunner(max_workers=1) as runner:
            yield runner
        return
    queue = multiprocessing.get_context("spawn").Queue()
    for device in devices:
        queue.put(device)
    try:
        with ProcessPoolTaskRunner(max_workers=len(devices), initializer=claim_device,
                                   initargs=(queue,)) as runner:
            yield runner
    finally:
        queue.close()
        queue.join_thread()
