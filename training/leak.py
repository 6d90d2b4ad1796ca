"""No score from a run on recordings it learnt from: the check of a run's recorded training groups
(:mod:`training.train_groups`) against the groups an evaluation scores.

A run's weights carry what it trained on and what the run it started from (``init_from``) trained on, so the
whole line of runs is checked. A run (or an ancestor) without a record is refused where a record is required:
its split cannot be worked out again, since a dataset catalogued after training changes the splits, and a
benchmark number that may hide a leak would be copied into comparisons without its caveat.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from store.errors import InvalidInputError
from store.layout import DataRoot
from training.config import read_config
from training.train_groups import train_groups_path, trained_among
from training.trainer import init_run_dir

EXAMPLES = 3


def refuse_trained_groups(root: DataRoot, run_ids: Sequence[str], groups: Collection[str], what: str, advice: str,
                          *, require_record: bool) -> None:
    """Raise :class:`InvalidInputError` when a run, or a run it started from, trained on any of ``groups`` (the
    groups of ``what``), or, with ``require_record``, has no record; ``advice`` ends the message."""
    for run_id in run_ids:
        for run_dir in _lineage(root, run_id):
            via = "" if run_dir == root.run_dir(run_id) else f" (through {run_dir}, which it started from)"
            trained = trained_among(run_dir, groups)
            if trained is None and require_record:
                raise InvalidInputError(
                    f"run {run_id} has no record of the groups it trained on{via} ({train_groups_path(run_dir)} is "
                    f"missing: it was trained before musictext kept one), so whether it learnt from {what}'s "
                    "recordings cannot be known; working its split out again would not tell, since a dataset "
                    f"catalogued after training changes the splits. {advice}")
            if trained:
                examples = ", ".join(sorted(trained)[:EXAMPLES])
                raise InvalidInputError(
                    f"run {run_id} trained on {len(trained)} of the {len(groups)} groups of {what}{via} (e.g. "
                    f"{examples}): its scores there would be inflated. {advice}")


def _lineage(root: DataRoot, run_id: str) -> Iterator[Path]:
    """The run's directory, then those of the runs its weights started from, nearest first."""
    run_dir, seen = root.run_dir(run_id), set()
    while run_dir not in seen:
        seen.add(run_dir)
        yield run_dir
        config_path = run_dir / "config.json"
        init_from = read_config(config_path).init_from if config_path.is_file() else None
        if init_from is None:
            return
        run_dir = init_run_dir(root, init_from)
