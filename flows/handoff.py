"""Handing one step of a flow to another work pool: a run of that step's deployment, or the step in-process.

The pipeline runs on the ``cpu`` pool; embedding and training want a GPU. When the server has their
deployments (``embed/gpu``, ``train/gpu``), the step becomes a run of that deployment, nested under the
pipeline's run in the UI and picked up by a worker of the ``gpu`` pool; its persisted result comes back
as the step's result. Without a server or without the deployment (the embedded default, a server that
was never deployed to), the caller runs the step in its own process: same parameters, same result.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import WorkPoolStatus
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

EMBED_DEPLOYMENT = "embed/gpu"
TRAIN_DEPLOYMENT = "train/gpu"


class HandOffError(RuntimeError):
    """A step run on another pool did not complete."""


def deployed(name: str) -> bool:
    """Whether the server this process talks to has the deployment ``name`` (``flow/deployment``).

    Warns when no worker of its pool is online: the run would wait, Scheduled, until one starts.
    """
    if not PREFECT_API_URL.value():
        return False
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
        pool = client.read_work_pool(deployment.work_pool_name) if deployment.work_pool_name else None
    if pool is not None and pool.status != WorkPoolStatus.READY:
        get_run_logger().warning("work pool %r has no worker online (%s): %s waits until one starts "
                                 "(`musictext worker --pool %s`)", pool.name, pool.status.value, name, pool.name)
    return True


def run_on_pool(name: str, parameters: dict[str, Any], run_name: str) -> Any:
    """Run deployment ``name`` as a subflow of the current run, wait for it, and return its result.

    The idempotency key ties the child to this attempt of the parent: a crashed parent that resumes finds
    its child instead of starting a second one, and a retried parent (a new attempt) starts a fresh child.
    """
    logger = get_run_logger()
    context = FlowRunContext.get()
    key = f"{context.flow_run.id}:{context.flow_run.run_count}:{run_name}" if context and context.flow_run else None
    logger.info("%s: handed to deployment %s", run_name, name)
    flow_run = run_deployment(name, parameters=parameters, flow_run_name=run_name, idempotency_key=key,
                              poll_interval=2)
    state = flow_run.state
    if state is None or not state.is_completed():
        raise HandOffError(f"{run_name} (deployment {name}, flow run {flow_run.id}) ended "
                           f"{state.name if state else 'without a state'}: {state.message if state else ''}")
    logger.info("%s: completed on the pool of %s", run_name, name)
    return state.result()
