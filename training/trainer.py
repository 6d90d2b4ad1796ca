"""Training a text embedder into one audio embedder's space, with checkpoints, resume and early stopping.

A run lives in ``runs/<run_id>/``:

* ``config.json``: the :class:`TrainConfig`;
* ``metrics.jsonl``: one line per evaluation (step, epoch, learning rate, temperature, the mean training
  losses since the previous evaluation, and ``val``: :func:`training.metrics.retrieval_metrics`);
* ``checkpoints/last/`` and ``checkpoints/best/`` (best validation text→music Recall@10): ``model/`` (a
  saved :class:`TextEmbedder`, loadable alone) and ``trainer.pt`` (optimizer, schedule, loss temperature,
  RNG states, step, early-stopping state);
* ``tensorboard/`` (and ``wandb/``, ``mlflow.db``, ``tracking.json`` when asked for): every step's losses, learning
  rate and temperature and every evaluation's metrics, for the trackers of :mod:`training.tracking`;
* ``train_groups.jsonl``: the groups of its training split (:mod:`training.train_groups`), so that evaluation
  on a benchmark can tell whether the run heard the benchmark's recordings;
* ``finished.json``, once the run has reached its last step or stopped early: steps, best step and
  metrics, split sizes. It is what tells a finished run from one still training (``musictext serve``
  and ``search`` take only finished runs by default); training a finished run again only rewrites it.

Starting a run whose directory has ``checkpoints/last`` resumes it: the batch order depends only on the
seed and the epoch, and every other piece of state is in the checkpoint, so a resumed run ends with the
weights of one that never stopped. A finished run is a no-op. Checkpoints are written to a temporary
directory and swapped in, so a killed run leaves the previous checkpoint or the new one.

Gradient accumulation sums gradients over ``grad_accum`` micro-batches per optimizer step; each
micro-batch is its own contrastive batch (its negatives are its own rows).

With ``devices`` > 1 the run is trained by that many processes started by a launcher (:mod:`training.launch`,
``torchrun``, ``accelerate launch``): each takes its slice of every micro-batch, and the loss is that of the whole
micro-batch (:mod:`training.distributed`). Only the main process writes anything under ``runs/<run_id>/``; it
evaluates and tells the others the metrics, so every process takes the same best-checkpoint and early-stopping
decisions. The checkpoints are those of one process, and either kind of run resumes the other's.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.optim.lr_scheduler import LambdaLR

from store.atomic import locked, write_text_atomic
from store.errors import InvalidInputError, MissingInputError
from store.layout import DataRoot
from training.config import TrainConfig, read_config
from training.data import EpochBatches, Item, PairDataset, ShardReader, load_splits, pair_loader
from training.distributed import Processes, join
from training.loss import ContrastiveLoss, LossTerms
from training.metrics import retrieval_metrics
from training.model import EmbedderConfig, TextEmbedder, autocast, load_text_embedder
from training.tracking import Trackers, open_trackers, require_packages
from training.tracking import clear as clear_tracking
from training.train_groups import record_train_groups

SELECTION_METRIC = "t2m_R@10"
CHECKPOINTS = ("last", "best")
MODEL_DIR = "model"
TEMP_SUFFIX = ".tmp"
TRAINER_FILE = "trainer.pt"
FINISHED_FILE = "finished.json"
OTHER_CHECKPOINT = {"best": "last", "last": "best"}


@dataclass(frozen=True)
class StepReport:
    """What :func:`train` tells ``on_progress`` after each optimizer step."""

    step: int
    max_steps: int
    loss: float
    temperature: float
    lr: float
    metrics: dict[str, float] | None
    """Validation metrics when this step was evaluated."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    max_steps: int
    best_step: int
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    stopped_early: bool
    split_sizes: dict[str, int]

    @property
    def best_model(self) -> Path:
        return checkpoint_model_dir(self.run_dir, "best")


@dataclass
class RunState:
    """Progress a checkpoint carries besides weights and optimizer: enough to continue exactly."""

    step: int = 0
    best_step: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    evals_since_best: int = 0
    stopped_early: bool = False
    loss_sums: dict[str, float] = field(default_factory=dict)
    """Training losses summed since the last evaluation (and ``steps``), for its metrics line."""

    def add_losses(self, losses: dict[str, float]) -> None:
        for name, value in {**losses, "steps": 1.0}.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + value

    def take_mean_losses(self) -> dict[str, float]:
        steps = self.loss_sums.pop("steps", 0.0)
        means = {name: total / steps for name, total in self.loss_sums.items()} if steps else {}
        self.loss_sums = {}
        return means


@dataclass(frozen=True)
class Validation:
    """Validation pairs: the first text of one item per group, and that item's audio vector."""

    items: list[Item]
    texts: list[str]
    audio: np.ndarray

    def evaluate(self, embedder: TextEmbedder, *, batch_size: int = 64) -> dict[str, float]:
        return retrieval_metrics(embedder.encode(self.texts, batch_size=batch_size), self.audio)


def validation_set(items: Sequence[Item], *, limit: int | None = None, seed: int = 0) -> Validation:
    """One pair per group: clips of one recording often share one text (tags of a track), and a text that
    matches several candidates equally would make the ranks arbitrary. ``limit`` groups at most, chosen
    with ``seed``, in corpus order."""
    by_group: dict[str, Item] = {}
    for item in items:
        by_group.setdefault(item.group, item)
    firsts = list(by_group.values())
    if limit is not None and len(firsts) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(firsts), size=limit, replace=False))
        firsts = [firsts[i] for i in keep]
    if not firsts:
        raise ValueError("no pairs to score: the split is empty; add data or raise its fraction")
    reader = ShardReader()
    try:
        audio = reader.read(firsts)
    finally:
        reader.close()
    return Validation(firsts, [item.texts[0] for item in firsts], audio)


def checkpoint_model_dir(run_dir: Path, which: str = "best") -> Path:
    """The saved embedder of a run's ``best`` or ``last`` checkpoint (for :func:`load_text_embedder`)."""
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint {which!r} is not one of {', '.join(CHECKPOINTS)}")
    return Path(run_dir) / "checkpoints" / which / MODEL_DIR


def warmup_cosine(warmup_steps: int, max_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear from 0 to 1 over ``warmup_steps``, then a cosine down to 0 at ``max_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} was asked for but this torch sees no CUDA GPU; train on cpu or auto")
    return device


def train(config: TrainConfig, root: DataRoot, *, on_progress: Callable[[StepReport], None] | None = None,
          show_progress: bool = True) -> TrainResult:
    """Train (or resume, or find finished) the run ``config.run_id`` under ``root``; see the module docstring.

    One training (of one or ``config.devices`` processes) trains a run at a time: a second one waits for the run's
    lock, which the main process holds, then finds it finished. Only the main process reports progress.
    """
    processes = join(resolve_device(config.device))
    if processes.count != config.devices:
        raise InvalidInputError(f"{config.run_id} is configured for {config.devices} device(s) but runs in "
                                f"{processes.count} process(es); start it through training.launch or a launcher "
                                f"with as many processes")
    run_dir = root.runs_dir() / config.run_id
    with locked(run_dir / "train") if processes.is_main else contextlib.nullcontext():
        return _train(config, root, run_dir, processes, on_progress if processes.is_main else None,
                      show_progress and processes.is_main)


def _train(config: TrainConfig, root: DataRoot, run_dir: Path, processes: Processes,
           on_progress: Callable[[StepReport], None] | None, show_progress: bool) -> TrainResult:
    require_packages(config.trackers)
    main = processes.is_main
    if main:
        _sweep_temporary_checkpoints(run_dir / "checkpoints")
        _recovered(run_dir / "checkpoints" / "last")
    processes.wait()
    last = run_dir / "checkpoints" / "last"
    if last.exists():
        _check_run_dir(run_dir, config)
    device = processes.device
    splits = load_splits(root, config.datasets, config.model, config.space, fractions=config.fractions,
                         seed=config.seed)
    sizes = {name: len(splits[name]) for name in ("train", "val", "test")}
    # Only the main process evaluates: the others need not hold the validation vectors.
    validation = validation_set(splits.val, limit=config.val_limit, seed=config.seed) if main else None
    batches_per_epoch = len(splits.train) // config.batch_size
    if batches_per_epoch < config.grad_accum:
        raise InvalidInputError(f"{len(splits.train)} training items make {batches_per_epoch} batches of "
                                f"{config.batch_size}, fewer than grad_accum ({config.grad_accum}); lower either")
    max_steps = config.max_steps or config.epochs * (batches_per_epoch // config.grad_accum)

    model = (load_text_embedder(last / MODEL_DIR, freeze_encoder=config.freeze_encoder) if last.exists()
             else _initial_model(config, splits.audio_dim, root)).to(device)
    loss_fn = ContrastiveLoss(temperature=config.temperature, mse_weight=config.mse_weight).to(device)
    optimizer = _optimizer(model, loss_fn, config)
    scheduler = LambdaLR(optimizer, warmup_cosine(config.warmup_steps, max_steps))
    if last.exists():
        state = _restore(last / TRAINER_FILE, loss_fn, optimizer, scheduler)
        if main:
            _truncate_metrics(run_dir / "metrics.jsonl", state.step)
    else:
        if main:
            _clear_unfinished_start(run_dir)
        torch.manual_seed(config.seed)
        state = RunState()
    training_left = state.step < max_steps and not state.stopped_early
    if main:
        write_text_atomic(run_dir / "config.json", json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")
        if training_left:
            record_train_groups(run_dir, (item.group for item in splits.train), resumed=last.exists())

    dataset = PairDataset(splits.train, seed=config.seed)
    batches = _micro_batches(dataset, config, batches_per_epoch, state.step * config.grad_accum, processes)
    # A finished run found again opens no tracker: it has nothing to log, and must not start another tracker run.
    try:
        with open_trackers(config.trackers if training_left and main else (), run_dir, config=config.to_json(),
                           first_step=state.step) as trackers:
            run = _Run(config, run_dir, model, loss_fn, processes.wrap(_Objective(model, loss_fn, processes)),
                       optimizer, scheduler, validation, processes, state, max_steps, batches_per_epoch, trackers)
            run.loop(batches, on_progress, show_progress)
    finally:
        batches.close()
        dataset.reader.close()
    result = TrainResult(run_dir, state.step, max_steps, state.best_step, state.best_metrics, state.last_metrics,
                         state.stopped_early, sizes)
    if main:
        _write_finished(result)
    return result


def _write_finished(result: TrainResult) -> None:
    facts = {"step": result.step, "max_steps": result.max_steps, "best_step": result.best_step,
             "best_metrics": result.best_metrics, "last_metrics": result.last_metrics,
             "stopped_early": result.stopped_early, "split_sizes": result.split_sizes}
    write_text_atomic(result.run_dir / FINISHED_FILE, json.dumps(facts, indent=2, sort_keys=True) + "\n")


def read_finished(run_dir: Path) -> TrainResult:
    """The result :func:`train` returned, read back from a finished run (what a launcher's caller gets)."""
    path = Path(run_dir) / FINISHED_FILE
    if not path.is_file():
        raise MissingInputError(f"{run_dir} has not finished training: no {FINISHED_FILE}")
    facts = json.loads(path.read_text())
    return TrainResult(Path(run_dir), facts["step"], facts["max_steps"], facts["best_step"], facts["best_metrics"],
                       facts.get("last_metrics", {}), facts["stopped_early"], facts["split_sizes"])


def is_finished(run_dir: Path) -> bool:
    """Whether the run reached its last step (or stopped early) and so will not change any more."""
    return (Path(run_dir) / FINISHED_FILE).is_file() and checkpoint_model_dir(run_dir).is_dir()


class _Objective(torch.nn.Module):
    """Texts and their audio vectors → the loss terms of the whole batch, over every process's rows
    (:meth:`Processes.gather`). One module holding every trained parameter (the embedder's and the temperature),
    so that one ``DistributedDataParallel`` around it averages all their gradients."""

    def __init__(self, model: TextEmbedder, loss_fn: ContrastiveLoss, processes: Processes) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.gather = processes.gather

    def forward(self, texts: list[str], audio: torch.Tensor) -> LossTerms:
        with autocast(self.model.device):
            text_vectors = self.model(texts)
        return self.loss_fn(self.gather(text_vectors), self.gather(audio))


@dataclass
class _Run:
    config: TrainConfig
    run_dir: Path
    model: TextEmbedder
    loss_fn: ContrastiveLoss
    objective: torch.nn.Module
    """:class:`_Objective`, under DDP when several processes train."""
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    validation: Validation | None
    """On the main process only."""
    processes: Processes
    state: RunState
    max_steps: int
    batches_per_epoch: int
    trackers: Trackers

    def loop(self, batches: Iterator[tuple[list[str], torch.Tensor]],
             on_progress: Callable[[StepReport], None] | None, show_progress: bool) -> None:
        state = self.state
        with _progress_bar(show_progress) as bar:
            task = bar.add_task(self.config.run_id, total=self.max_steps, completed=state.step, status="")
            while state.step < self.max_steps and not state.stopped_early:
                self.model.train()
                temperature = self.loss_fn.temperature.item()
                losses = self._step(batches)
                state.step += 1
                state.add_losses(losses)
                metrics = self._evaluate() if self._due(self.config.eval_every) else None
                self.trackers.log(state.step, self._scalars(losses, metrics))
                if self._due(self.config.checkpoint_every) or state.stopped_early:
                    self.trackers.flush()  # a resume logs only the steps after this checkpoint
                    self._save("last")
                bar.update(task, completed=state.step, status=_status(losses["loss"], temperature, state))
                if on_progress is not None:
                    on_progress(StepReport(state.step, self.max_steps, losses["loss"], temperature,
                                           self.scheduler.get_last_lr()[0], metrics))

    def _scalars(self, losses: dict[str, float], metrics: dict[str, float] | None) -> dict[str, float]:
        """A step's tracker values; learning rate and temperature as they leave the step, as in ``metrics.jsonl``."""
        return {**{f"train/{name}": value for name, value in losses.items()},
                "train/lr": self.scheduler.get_last_lr()[0], "train/temperature": self.loss_fn.temperature.item(),
                **{f"val/{name}": value for name, value in (metrics or {}).items()}}

    def _due(self, every: int) -> bool:
        return self.state.step % every == 0 or self.state.step == self.max_steps

    def _step(self, batches: Iterator[tuple[list[str], torch.Tensor]]) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss terms."""
        device, accum = self.model.device, self.config.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "infonce": 0.0, "squared_distance": 0.0}
        for micro in range(accum):
            texts, audio = next(batches)
            with self.processes.accumulating(self.objective, last=micro == accum - 1):
                terms = self.objective(texts, audio.to(device, non_blocking=True))
                (terms.total / accum).backward()
            for name, value in (("loss", terms.total), ("infonce", terms.infonce),
                                ("squared_distance", terms.squared_distance)):
                sums[name] += value.item() / accum
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(_trained_parameters(self.optimizer), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return sums

    def _evaluate(self) -> dict[str, float]:
        state = self.state
        metrics = self.processes.from_main(lambda: self.validation.evaluate(self.model))
        state.last_metrics = metrics
        line = {"step": state.step, "epoch": state.step * self.config.grad_accum / self.batches_per_epoch,
                "lr": self.scheduler.get_last_lr()[0], "temperature": self.loss_fn.temperature.item(),
                **state.take_mean_losses(), "val": metrics}
        if not state.best_metrics or metrics[SELECTION_METRIC] > state.best_metrics[SELECTION_METRIC]:
            state.best_step, state.best_metrics, state.evals_since_best = state.step, metrics, 0
            self._save("best")
        else:
            state.evals_since_best += 1
            state.stopped_early = self.config.patience is not None and state.evals_since_best >= self.config.patience
        if self.processes.is_main:
            with (self.run_dir / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps(line, sort_keys=True) + "\n")
        return metrics

    def _save(self, which: str) -> None:
        if not self.processes.is_main:
            return
        target = self.run_dir / "checkpoints" / which
        temp = target.with_name(f".{which}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            self.model.save(temp / MODEL_DIR)
            torch.save({
                "state": asdict(self.state),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "loss": self.loss_fn.state_dict(),
                "rng": _rng_state(),
            }, temp / TRAINER_FILE)
            _link_identical(temp, target.with_name(OTHER_CHECKPOINT[which]))
            _swap_in(temp, target)
        finally:
            shutil.rmtree(temp, ignore_errors=True)


def _clear_unfinished_start(run_dir: Path) -> None:
    """What an attempt that never reached its first ``last`` checkpoint left (metrics, curves, maybe a ``best``):
    nothing to resume, and perhaps from another configuration, so a fresh start removes it."""
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    (run_dir / FINISHED_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    clear_tracking(run_dir)


def _check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to continue a run that was started with another configuration."""
    path = run_dir / "config.json"
    if path.exists():
        differences = config.differences(read_config(path))
        if differences:
            raise InvalidInputError(f"{run_dir} holds a run with another configuration "
                                    f"({'; '.join(differences)}); resume it with its own configuration, or choose a "
                                    "new run_id")


def _initial_model(config: TrainConfig, audio_dim: int, root: DataRoot) -> TextEmbedder:
    if config.init_from is None:
        return TextEmbedder(EmbedderConfig(audio_dim, config.head, config.encoder, config.max_length, config.seed,
                                           config.model), freeze_encoder=config.freeze_encoder)
    run_dir = init_run_dir(root, config.init_from)
    model = load_text_embedder(checkpoint_model_dir(run_dir, "best"), freeze_encoder=config.freeze_encoder)
    wanted = {"audio_dim": audio_dim, "head": config.head, "encoder": config.encoder, "audio_model": config.model}
    found = asdict(model.config)
    mismatched = [f"{name} {found[name]!r} (wanted {value!r})" for name, value in wanted.items()
                  if found[name] != value]
    if mismatched:
        raise InvalidInputError(f"init_from {run_dir} has another model: {', '.join(mismatched)}")
    model.config = replace(model.config, max_length=config.max_length)
    return model


def init_run_dir(root: DataRoot, init_from: str) -> Path:
    """The run a config's ``init_from`` names: a run directory, or a run id under ``runs/``."""
    source = Path(init_from)
    return source if source.is_dir() else root.runs_dir() / init_from


def _optimizer(model: TextEmbedder, loss_fn: ContrastiveLoss, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases, norms and the temperature are not decayed, the encoder may have its own rate."""
    groups: list[dict[str, Any]] = []
    parts = [(model.head, config.lr)]
    if not config.freeze_encoder:
        parts.append((model.encoder, config.encoder_lr or config.lr))
    for module, lr in parts:
        params = [p for p in module.parameters() if p.requires_grad]
        groups.append({"params": [p for p in params if p.ndim >= 2], "lr": lr, "weight_decay": config.weight_decay})
        groups.append({"params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0})
    groups.append({"params": [loss_fn.log_temperature], "lr": config.lr, "weight_decay": 0.0})
    # The fused kernel updates all parameters in one pass (torch has it for CPU and CUDA): on CPU the per-tensor
    # default costs as much as the backward pass when the encoder trains.
    return torch.optim.AdamW([group for group in groups if group["params"]],
                             fused=model.device.type in ("cpu", "cuda"))


def _trained_parameters(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _micro_batches(dataset: PairDataset, config: TrainConfig, batches_per_epoch: int, first: int,
                   processes: Processes) -> Iterator[tuple[list[str], torch.Tensor]]:
    """This process's slice of the training micro-batches from the ``first``-th on, across epochs, each epoch in
    its seeded order."""
    epoch, start = divmod(first, batches_per_epoch)
    device = processes.device
    while True:
        dataset.set_epoch(epoch)
        sampler = EpochBatches(len(dataset), config.batch_size, seed=config.seed, epoch=epoch, start=start,
                               blocks=dataset.blocks, shard=processes.index, shards=processes.count)
        # The loader draws its workers' base seed from this generator, not from the global RNG, which the
        # checkpoint restores for dropout: a resumed run must draw the same dropout masks.
        yield from pair_loader(dataset, sampler, num_workers=config.num_workers, pin_memory=device.type == "cuda",
                               generator=torch.Generator().manual_seed(config.seed))
        epoch, start = epoch + 1, 0


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _restore(path: Path, loss_fn: ContrastiveLoss, optimizer: torch.optim.Optimizer, scheduler: LambdaLR) -> RunState:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    loss_fn.load_state_dict(saved["loss"])
    torch.set_rng_state(saved["rng"]["torch"])
    if saved["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return RunState(**saved["state"])


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines written after the checkpoint: the resumed run evaluates those steps again."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if _line_step(line) <= step]
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def _line_step(line: str) -> float:
    """A metrics line's step; a line cut short by a crash counts as later than any checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def _link_identical(new: Path, other: Path) -> None:
    """Make each file of checkpoint ``new`` that is byte-identical to its namesake in checkpoint ``other`` a hard
    link to it. A frozen encoder (and a ``best`` saved at the step of ``last``) is then stored once, not once per
    checkpoint: the encoder is most of a checkpoint's size. Safe because checkpoints are only ever replaced whole,
    never written in place; on a filesystem without hard links each keeps its own copy."""
    for path in new.rglob("*"):
        twin = other / path.relative_to(new)
        if path.is_file() and twin.is_file() and filecmp.cmp(path, twin, shallow=False):
            link = path.with_name(f".{path.name}.link")
            try:
                os.link(twin, link)
            except OSError:  # a filesystem without hard links keeps the copy
                continue
            os.replace(link, path)


def _swap_in(temp: Path, target: Path) -> None:
    """Replace directory ``target`` by ``temp``; a crash in between leaves ``.<name>.old``, which
    :func:`_recovered` puts back."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    temp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _sweep_temporary_checkpoints(directory: Path) -> None:
    """Half-written checkpoints of a killed process (the run's lock is held, so no live one writes here)."""
    for temp in directory.glob(f".*{TEMP_SUFFIX}"):
        shutil.rmtree(temp, ignore_errors=True)


def _recovered(target: Path) -> Path:
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.exists():
        old.rename(target)
    return target


def _progress_bar(show: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not show)


def _status(loss: float, temperature: float, state: RunState) -> str:
    best = state.best_metrics.get(SELECTION_METRIC)
    return f"loss {loss:.4f} T {temperature:.3f}" + (
        f" best {SELECTION_METRIC} {best:.3f}@{state.best_step}" if best is not None else "")
