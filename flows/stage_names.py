"""The pipeline's stage names, in pipeline order: a module of its own, with no Prefect import, so the CLI can
list them in its help, and check them, without loading the flows."""

from __future__ import annotations

from collections.abc import Sequence

STAGES = ("ingest", "preprocess", "embed", "verify", "train")
DEFAULT_STAGES = ("ingest", "preprocess", "embed", "verify")


def check_stages(stages: Sequence[str] | None) -> list[str]:
    """``stages`` in pipeline order (default: all but training); unknown names raise."""
    chosen = set(stages or DEFAULT_STAGES)
    unknown = sorted(chosen - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    return [stage for stage in STAGES if stage in chosen]
