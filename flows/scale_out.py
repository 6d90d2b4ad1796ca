"""Where a stage's work units run: the flow's bounded thread pool, or the workers of a Dask cluster.

A Dask cluster spreads the units over processes (a ``LocalCluster`` started for the run) or over
machines (an existing scheduler, ``--dask-address``); each unit is still one Prefect task run with its
logs in the UI, and the data root every worker mounts stays the only state. A pipeline starts one
``LocalCluster`` and hands its address to every stage, instead of paying a cluster start per stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.task_runners import TaskRunner


@contextmanager
def dask_cluster(dask: bool, address: str | None, workers: int) -> Iterator[str | None]:
    """The scheduler address units go to: ``address``; else, with ``dask``, a ``LocalCluster`` of ``workers``
    single-threaded processes started for the block; else None (the flow's own thread pool)."""
    if address or not dask:
        yield address
        return
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@contextmanager
def unit_runner(dask: bool, address: str | None, workers: int) -> Iterator[TaskRunner | None]:
    """A started ``DaskTaskRunner`` on the cluster :func:`dask_cluster` gives, or None for the flow's runner."""
    with dask_cluster(dask, address, workers) as scheduler:
        if scheduler is None:
            yield None
            return
        from prefect_dask import DaskTaskRunner

        with DaskTaskRunner(address=scheduler) as runner:
            yield runner
