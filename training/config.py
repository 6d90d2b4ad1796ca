"""A training run's configuration: everything that decides its result, written to ``runs/<id>/config.json``.

A run directory belongs to one configuration: resuming with another is refused (a checkpoint's optimizer
state and schedule only make sense for the settings that produced them), except for the fields in
:data:`RESUMABLE_CHANGES`, which decide where and how fast a run goes but not what it computes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from store.errors import InvalidInputError, MissingInputError
from store.layout import DataRoot
from store.names import InvalidNameError, check_name
from training.tracking import DEFAULT_TRACKERS, TRACKERS

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
HEADS = ("frames", "pooled")

RESUMABLE_CHANGES = frozenset({"device", "devices", "num_workers", "trackers"})


@dataclass(frozen=True)
class TrainConfig:
    model: str
    """The audio embedder whose space the text embedder learns."""
    datasets: tuple[str, ...]
    run_id: str
    space: str = ""
    """The space of the audio vectors it learns (``embeddings/<space>/<model>/``), set from the model's spec by
    the train flow. A run learns one space: resuming, evaluating or searching it in another is refused."""
    encoder: str = DEFAULT_ENCODER
    head: str = "pooled"
    freeze_encoder: bool = False
    max_length: int = 128
    stage: int = 1
    """1: InfoNCE on short clips; 2: InfoNCE + ``mse_weight`` × squared distance (full songs)."""
    mse_weight: float = 0.0
    init_from: str | None = None
    """A run directory (or a run id under ``runs/``) whose best model starts this run, e.g. stage 1 for stage 2."""
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-4
    encoder_lr: float | None = None
    """The encoder's learning rate when it trains; ``lr`` when unset. Pretrained weights usually want less."""
    weight_decay: float = 0.01
    temperature: float = 0.07
    max_grad_norm: float | None = 1.0
    warmup_steps: int = 100
    epochs: int = 10
    max_steps: int | None = None
    """Optimizer steps to train; when set it wins over ``epochs``."""
    checkpoint_every: int = 500
    eval_every: int = 500
    patience: int | None = 5
    """Evaluations without a better validation text→music Recall@10 before stopping; ``None`` never stops early."""
    val_limit: int | None = 1000
    """Validation pairs (one per group) scored at each evaluation; bounds the audio vectors kept in memory."""
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    device: str = "auto"
    devices: int = 1
    """Processes training data-parallel (:mod:`training.distributed`), one GPU each or, on ``cpu``, gloo
    processes. Each takes ``batch_size / devices`` rows of every batch of ``batch_size`` and the loss is that of
    the whole batch, so the number changes the speed, not (beyond rounding) the result, and a run may resume
    with another."""
    num_workers: int = 0
    trackers: tuple[str, ...] = DEFAULT_TRACKERS
    """Where the curves go besides ``metrics.jsonl`` (:mod:`training.tracking`); empty for nowhere."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "fractions", check_fractions(self.fractions))
        object.__setattr__(self, "trackers", tuple(self.trackers))
        problems = self._problems()
        if problems:
            raise InvalidInputError(f"training config: {'; '.join(problems)}")

    def _problems(self) -> list[str]:
        positive = ("batch_size", "grad_accum", "lr", "epochs", "checkpoint_every", "eval_every", "max_length",
                    "temperature", "devices")
        problems = [f"{name} must be positive, got {getattr(self, name)}" for name in positive
                    if getattr(self, name) <= 0]
        problems += [f"{name} must be positive when set, got {getattr(self, name)}"
                     for name in ("max_steps", "patience", "val_limit", "encoder_lr", "max_grad_norm")
                     if getattr(self, name) is not None and getattr(self, name) <= 0]
        for what, name in [("run_id", self.run_id), *(("dataset", dataset) for dataset in self.datasets)]:
            try:
                check_name(name, what)
            except InvalidNameError as error:
                problems.append(str(error))
        if not self.datasets:
            problems.append("name at least one dataset")
        if self.head not in HEADS:
            problems.append(f"head {self.head!r} is not one of {', '.join(HEADS)}")
        unknown_trackers = sorted(set(self.trackers) - set(TRACKERS))
        if unknown_trackers:
            problems.append(f"unknown tracker(s) {', '.join(unknown_trackers)}; trackers are {', '.join(TRACKERS)}")
        if self.stage not in (1, 2):
            problems.append(f"stage must be 1 or 2, got {self.stage}")
        elif (self.stage == 2) != (self.mse_weight > 0):
            problems.append(f"stage 1 trains InfoNCE alone (mse_weight 0), stage 2 adds the squared distance "
                            f"(mse_weight > 0); got stage {self.stage} with mse_weight {self.mse_weight}")
        if self.devices > 0 and self.batch_size % self.devices:
            problems.append(f"batch_size {self.batch_size} does not split evenly over {self.devices} devices")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.num_workers < 0:
            problems.append("warmup_steps, weight_decay and num_workers must not be negative")
        return problems

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config fields: {', '.join(unknown)}")
        return cls(**{**data, "datasets": tuple(data["datasets"]), "fractions": tuple(data["fractions"])})

    def differences(self, other: TrainConfig) -> list[str]:
        """``field: mine → theirs`` for each field that differs and would change the result."""
        mine, theirs = self.to_json(), other.to_json()
        return [f"{name}: {theirs[name]!r} → {mine[name]!r}" for name in mine
                if name not in RESUMABLE_CHANGES and mine[name] != theirs[name]]


def read_config(path: Path) -> TrainConfig:
    return TrainConfig.from_json(json.loads(path.read_text()))


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers (train, val, test) summing to 1, "
                         f"got {tuple(fractions)}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def run_config(root: DataRoot, run_id: str) -> TrainConfig:
    path = root.run_dir(run_id) / "config.json"
    if not path.is_file():
        raise MissingInputError(f"no training run {run_id!r} under {root.runs_dir()}; `musictext train` makes one")
    return TrainConfig.from_json(json.loads(path.read_text()))
