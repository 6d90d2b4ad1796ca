"""Finding trained text embedders among the runs of a data root: the one a user names, or the newest finished.

A run is ``runs/<run_id>/`` (see :mod:`training.trainer`); its ``config.json`` says which audio model and
space it learned. Serving and search take the newest *finished* run by default, so a run still training (its
best checkpoint changing under the reader) is never picked up by accident; a run named explicitly is taken
as soon as it has a best checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from store.errors import InvalidInputError, MissingInputError
from store.layout import DataRoot
from training.config import TrainConfig, run_config
from training.trainer import checkpoint_model_dir, is_finished


@dataclass(frozen=True)
class TrainedRun:
    run_id: str
    run_dir: Path
    config: TrainConfig
    finished: bool

    @property
    def model_dir(self) -> Path:
        """The best checkpoint's saved embedder."""
        return checkpoint_model_dir(self.run_dir)


def trained_run(root: DataRoot, run_id: str, *, model: str, space: str) -> TrainedRun:
    """The run ``run_id``, checked to have a best checkpoint and to embed into ``model``'s vectors of ``space``."""
    config = run_config(root, run_id)
    run_dir = root.run_dir(run_id)
    if (config.model, config.space) != (model, space):
        raise InvalidInputError(f"run {run_id} embeds text into {config.model}'s vectors of space "
                                f"{config.space or '(none)'}, not {model}'s of space {space}; train a text embedder "
                                "for them")
    if not checkpoint_model_dir(run_dir).is_dir():
        raise MissingInputError(f"run {run_id} has no best checkpoint yet; it is saved at its first evaluation")
    return TrainedRun(run_id, run_dir, config, is_finished(run_dir))


def newest_run(root: DataRoot, model: str, space: str) -> str:
    """The most recently finished run for ``model`` in ``space``."""
    finished = [path.parent for path in root.runs_dir().glob("*/config.json") if is_finished(path.parent)]
    runs = [run for run in finished if _learns(root, run.name, model, space)]
    if not runs:
        raise MissingInputError(f"no finished text embedder for {model} in space {space} under {root.runs_dir()}; "
                                f"train one with `musictext train --model {model} --dataset DATASET`")
    return max(runs, key=lambda run: checkpoint_model_dir(run).stat().st_mtime).name


def _learns(root: DataRoot, run_id: str, model: str, space: str) -> bool:
    config = run_config(root, run_id)
    return (config.model, config.space) == (model, space)
