"""Stage progress for both audiences: a rich bar in the terminal, a progress artifact in the Prefect UI."""

from __future__ import annotations

import re
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


class StageProgress:
    def __init__(self, stage: str, dataset: str, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._bar = Progress(
            TextColumn(f"[bold]{stage}[/] {dataset}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self._task = self._bar.add_task(stage, total=total)
        self._artifact = None
        # Prefect loads here, not at import: the CLI imports ``console`` and its --help must not load Prefect.
        from prefect.artifacts import create_progress_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is not None:
            # A stage with nothing to do is complete at once: the UI must not show it stuck at 0 %.
            self._artifact = create_progress_artifact(
                0.0 if total else 100.0, key=artifact_key(dataset, stage, "progress"),
                description=f"{stage} of {dataset}",
            )

    def advance(self, items: int) -> None:
        self.done += items
        self._bar.advance(self._task, items)
        if self._artifact is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._artifact, progress=100.0 * self.done / self.total)

    def __enter__(self) -> StageProgress:
        self._bar.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.stop()
