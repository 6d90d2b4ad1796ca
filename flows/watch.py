"""Following a flow run on the server from the terminal: its state and every progress artifact of its runs.

``musictext reprocess`` starts a deployment run and waits for it. What the UI shows as progress
artifacts (one per stage, updated as work units finish) is mirrored here as rich progress bars, over the
run and every flow run nested under it (stages called as subflows, steps handed to the gpu pool).
"""

from __future__ import annotations

import time
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def family(client: SyncPrefectClient, run_id: UUID) -> list[FlowRun]:
    """The run and every flow run nested under it, at any depth."""
    runs = [client.read_flow_run(run_id)]
    frontier = [run_id]
    while frontier:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
        runs += children
        frontier = [child.id for child in children]
    return runs


def follow(client: SyncPrefectClient, run_id: UUID, console: Console, poll_s: float = 1.0) -> FlowRun:
    """Show progress until the run reaches a final state; return the run as it ended."""
    bars: dict[UUID, TaskID] = {}
    states: dict[UUID, str] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f} %"),
                  TimeElapsedColumn(), console=console) as progress:
        while True:
            runs = family(client, run_id)
            for run in runs:
                state = run.state.name if run.state else "Unknown"
                if states.get(run.id) != state:
                    states[run.id] = state
                    progress.console.print(f"{run.name}: {state}")
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id for run in runs]),
                type=ArtifactFilterType(any_=["progress"])))
            for artifact in artifacts:
                if artifact.id not in bars:
                    bars[artifact.id] = progress.add_task(artifact.description or artifact.key or "", total=100)
                progress.update(bars[artifact.id], completed=float(artifact.data or 0))
            parent = runs[0]
            if parent.state is not None and parent.state.is_final():
                return parent
            time.sleep(poll_s)
