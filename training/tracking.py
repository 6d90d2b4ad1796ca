"""Experiment tracking: a training run's curves in TensorBoard by default, in Weights & Biases or MLflow on request.

``metrics.jsonl`` keeps one line per evaluation; the trackers get every optimizer step (``train/loss``,
``train/infonce``, ``train/squared_distance``, ``train/lr``, ``train/temperature``) and every evaluation
(``val/<metric>`` of :func:`training.metrics.retrieval_metrics`), so a run can be watched while it trains and
compared with others.

* ``tensorboard``: event files in ``runs/<id>/tensorboard/`` (``tensorboard --logdir runs`` shows every run).
* ``wandb``: offline unless ``WANDB_MODE`` says otherwise (training machines often have no network; ``wandb sync``
  uploads later), files in ``runs/<id>/wandb/``, project ``$WANDB_PROJECT`` or ``musictext``.
* ``mlflow``: ``$MLFLOW_TRACKING_URI``, else a SQLite store ``runs/<id>/mlflow.db`` (MLflow ≥ 3.13 refuses its
  old file store without an opt-in), experiment ``$MLFLOW_EXPERIMENT_NAME`` or ``musictext``.

A resumed run continues the same tracker run. The steps between its checkpoint and the crash were logged
before the crash, and training them again gives the same values (resume is exact): TensorBoard purges them
(``purge_step``) and takes them again; W&B and MLflow, which cannot take a logged point back, keep the first
copy and skip the repeat. W&B and MLflow run ids live in ``runs/<id>/tracking.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from store.atomic import write_text_atomic
from store.errors import InvalidInputError, UserError

TENSORBOARD, WANDB, MLFLOW = "tensorboard", "wandb", "mlflow"
TRACKERS = (TENSORBOARD, WANDB, MLFLOW)
DEFAULT_TRACKERS = (TENSORBOARD,)
NO_TRACKER = "none"
TENSORBOARD_DIR = "tensorboard"
STATE_FILE = "tracking.json"
DEFAULT_PROJECT = "musictext"
LOSS_TAG = "train/loss"


class TrackerUnavailableError(UserError, ImportError):
    """A tracker was asked for but its package is not installed."""


class Tracker(Protocol):
    def log(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def flush(self) -> None: ...

    def close(self, finished: bool) -> None: ...


def parse_trackers(values: str | Iterable[str]) -> tuple[str, ...]:
    """The trackers a user's ``--tracker`` values ask for (repeatable, comma lists), in :data:`TRACKERS` order.

    TensorBoard costs nothing and needs no account, so it stays on beside the others unless ``none`` is given;
    ``none`` alone turns every tracker off."""
    values = [values] if isinstance(values, str) else values
    names = [name.strip().lower() for value in values for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - {*TRACKERS, NO_TRACKER})
    if unknown:
        raise InvalidInputError(f"unknown tracker(s) {', '.join(unknown)}; trackers are {', '.join(TRACKERS)} "
                                f"or {NO_TRACKER}")
    chosen = {*names, *([] if NO_TRACKER in names else DEFAULT_TRACKERS)}
    return tuple(name for name in TRACKERS if name in chosen)


def require_packages(trackers: Iterable[str]) -> None:
    """Fail before any training when a tracker's package is missing, rather than after the data has loaded."""
    missing = [name for name in trackers if not _importable(name)]
    if missing:
        raise TrackerUnavailableError(f"tracker package(s) not installed: {', '.join(missing)}; "
                                      f"pip install {' '.join(missing)}")


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def tensorboard_dir(run_dir: Path) -> Path:
    return Path(run_dir) / TENSORBOARD_DIR


def mlflow_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"


def locations(run_dir: Path, trackers: Iterable[str]) -> list[str]:
    """Where each tracker of a run writes and how to open it, as Markdown lines for artifacts and logs."""
    run_dir = Path(run_dir).resolve()
    events, wandb_dir = tensorboard_dir(run_dir), run_dir / "wandb"
    project = os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT)
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_PROJECT)
    lines = {
        TENSORBOARD: f"TensorBoard event files: `{events}`; open them with `tensorboard --logdir {events}` "
                     f"(or `--logdir {run_dir.parent}` for every run)",
        WANDB: f"Weights & Biases: project `{project}`, run `{run_dir.name}`, files in `{wandb_dir}` "
               f"(an offline run uploads with `wandb sync {wandb_dir}/offline-run-*`)",
        MLFLOW: f"MLflow: experiment `{experiment}`, run `{run_dir.name}`; open with "
                f"`mlflow ui --backend-store-uri {mlflow_uri(run_dir)}`",
    }
    return [lines[name] for name in trackers]


def clear(run_dir: Path) -> None:
    """Forget what an abandoned start logged: a fresh start must not append to its curves or tracker runs."""
    shutil.rmtree(tensorboard_dir(run_dir), ignore_errors=True)
    (Path(run_dir) / STATE_FILE).unlink(missing_ok=True)


@dataclass
class Trackers:
    """The trackers of one training attempt, logged to together."""

    members: list[Tracker]

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for member in self.members:
            member.log(step, scalars)

    def flush(self) -> None:
        """Called before each checkpoint: what a resume will not log again must be on disk first."""
        for member in self.members:
            member.flush()


@contextmanager
def open_trackers(trackers: Sequence[str], run_dir: Path, *, config: Mapping[str, Any],
                  first_step: int) -> Iterator[Trackers]:
    """The trackers named, continuing their runs when the training run continues from ``first_step`` > 0.

    Leaving the block normally marks the tracker runs finished; an exception leaves them resumable."""
    state_path = Path(run_dir) / STATE_FILE
    state = json.loads(state_path.read_text()) if first_step and state_path.exists() else {}
    members: list[Tracker] = []
    finished = False
    try:
        for name in trackers:
            members.append(_OPENERS[name](Path(run_dir), config, first_step, state))
        if WANDB in trackers or MLFLOW in trackers:
            write_text_atomic(state_path, json.dumps(state, indent=2, sort_keys=True) + "\n")
        yield Trackers(members)
        finished = True
    finally:
        for member in members:
            member.close(finished)


class _TensorBoard:
    def __init__(self, run_dir: Path, config: Mapping[str, Any], first_step: int, state: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # Events past the checkpoint are hidden (TensorBoard purges steps >= purge_step when it reads the files).
        self.writer = SummaryWriter(str(tensorboard_dir(run_dir)), purge_step=first_step + 1 if first_step else None)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, finished: bool) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: Mapping[str, Any], first_step: int, state: dict[str, Any]) -> None:
        import wandb

        run_id = state.setdefault(WANDB, {}).setdefault("id", secrets.token_hex(6))
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT), name=run_dir.name,
                              id=run_id, resume="allow", dir=str(run_dir), config=dict(config),
                              mode=None if os.environ.get("WANDB_MODE") else "offline")

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        if step >= self.run.step:  # W&B drops (and warns about) a step it already has
            self.run.log(dict(scalars), step=step)

    def flush(self) -> None:
        """W&B's own process writes what it was given; nothing to do."""

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


class _MLflow:
    def __init__(self, run_dir: Path, config: Mapping[str, Any], first_step: int, state: dict[str, Any]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri = mlflow_uri(run_dir)
        self.client = MlflowClient(tracking_uri=uri)
        saved = state.get(MLFLOW, {})
        if saved.get("tracking_uri") == uri:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(self._experiment(run_dir), run_name=run_dir.name).info.run_id
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in sorted(config.items())])
            state[MLFLOW] = {"tracking_uri": uri, "run_id": self.run_id}
        history = self.client.get_metric_history(self.run_id, _mlflow_key(LOSS_TAG))
        self.logged_through = max((metric.step for metric in history), default=0)

    def _experiment(self, run_dir: Path) -> str:
        """The experiment's id; one this module creates keeps its artifacts beside its store, not in the cwd."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_PROJECT)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        local = None if os.environ.get("MLFLOW_TRACKING_URI") else (run_dir / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=local)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        if step > self.logged_through:  # MLflow would keep both copies of a step logged before a crash
            timestamp = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(_mlflow_key(tag), value, timestamp, step)
                                                        for tag, value in scalars.items()])

    def flush(self) -> None:
        """Each log call is written at once; nothing to do."""

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if finished else "FAILED")


def _mlflow_key(tag: str) -> str:
    """MLflow allows letters, digits, ``_-. /`` and ``:`` in metric names, not the ``@`` of ``R@10``."""
    return tag.replace("@", "_at_")


Opener = Callable[[Path, Mapping[str, Any], int, dict[str, Any]], Tracker]
_OPENERS: dict[str, Opener] = {TENSORBOARD: _TensorBoard, WANDB: _WandB, MLFLOW: _MLflow}
