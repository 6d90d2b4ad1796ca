"""What one stage run did for one dataset: a module of its own, with no Prefect import, so that the CLI can
show the summary of a run that found nothing to do without loading the flows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.plan import Plan
    from flows.work import UnitResult


@dataclass
class StageSummary:
    """What one stage run did for one dataset: the row of the table artifact and of the CLI summary."""

    dataset: str
    stage: str
    items: int
    done_before: int
    worked: int
    ok: int
    failed: int
    skipped_permanent: int
    failures: dict[str, int]
    extra: str = ""
    verdict: str = ""
    """verify's verdict (``ok`` or ``unexplained_failures``); empty for the other stages."""

    @classmethod
    def from_plan(cls, dataset: str, stage: str, plan: Plan, results: Sequence[UnitResult]) -> StageSummary:
        records = [r for result in results for r in result.records]
        failures: dict[str, int] = {}
        for record in records:
            if not record.is_ok:
                failures[record.reason or "unknown"] = failures.get(record.reason or "unknown", 0) + 1
        ok = sum(r.is_ok for r in records)
        return cls(dataset, stage, plan.total, plan.done, len(records), ok, len(records) - ok, plan.skipped, failures)

    def row(self) -> dict[str, Any]:
        """The summary as one row of a table artifact, failures by reason in one cell."""
        row = {k: v for k, v in asdict(self).items() if k != "failures"}
        row["failures"] = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        return row
