"""Which training runs a ``train`` call makes, checked before anything starts, and whether they are all finished
already: no Prefect here, so the CLI says a mistake, or prints runs that need nothing, without starting a flow."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from embedders import embedder_spec
from store.errors import InvalidInputError
from store.layout import DataRoot
from training.config import HEADS, TrainConfig, read_config
from training.distributed import launched_processes
from training.launch import check_devices
from training.tracking import parse_trackers, require_packages
from training.trainer import TrainResult, is_finished, read_finished

STAGE2_SUFFIX = "-stage2"


@dataclass(frozen=True)
class RunSummary:
    config: TrainConfig
    result: TrainResult


def run_ids(run_id: str, heads: list[str], stage2: bool) -> list[str]:
    """The runs ``train`` makes: one per head, ``<run_id>-<head>``, and its stage-2 continuation."""
    base = [f"{run_id}-{head}" for head in heads]
    return base + [f"{name}{STAGE2_SUFFIX}" for name in base] if stage2 else base


def train_configs(model: str = "dsp", datasets: list[str] | None = None, run_id: str | None = None,
                  heads: list[str] | None = None, stage2_mse_weight: float = 0.0,
                  options: dict[str, Any] | None = None) -> list[TrainConfig]:
    """The runs :func:`train` makes, in order (each stage-2 run right after the stage-1 run it starts from).

    Every check of the user's choices happens here (the model, the heads, the run id, each training option), so
    the CLI calls it before starting the flow and a mistake is said at once, before any flow run."""
    datasets = datasets or ["synthetic"]
    heads = heads or list(HEADS)
    unknown = sorted(set(heads) - set(HEADS))
    if unknown:
        raise InvalidInputError(f"unknown head(s) {', '.join(unknown)}; heads are {', '.join(HEADS)}")
    unknown_options = sorted(set(options or {}) - {f.name for f in fields(TrainConfig)})
    if unknown_options:
        raise InvalidInputError(f"unknown training option(s) {', '.join(unknown_options)}")
    run_id = run_id or f"{model}-{'-'.join(datasets)}"
    space = embedder_spec(model).space
    options = dict(options or {})
    if "trackers" in options:
        options["trackers"] = parse_trackers(options["trackers"])
    configs = []
    for head in heads:
        stage1 = TrainConfig(model=model, datasets=tuple(datasets), run_id=f"{run_id}-{head}", head=head,
                             space=space, **options)
        configs.append(stage1)
        if stage2_mse_weight > 0:
            configs.append(TrainConfig(**{**stage1.to_json(), "run_id": stage1.run_id + STAGE2_SUFFIX, "stage": 2,
                                          "mse_weight": stage2_mse_weight, "init_from": stage1.run_id}))
    require_packages(configs[0].trackers)
    if launched_processes() == 1:  # a launcher's processes may span machines: it counted them
        check_devices(configs[0])
    return configs


def already_trained(configs: list[TrainConfig], root: DataRoot) -> list[RunSummary] | None:
    """The summaries of ``configs`` when every run has finished with that configuration, read from their
    ``finished.json``: what :func:`train` would return without training, known without starting a flow."""
    summaries = []
    for config in configs:
        run_dir = root.runs_dir() / config.run_id
        if not is_finished(run_dir) or config.differences(read_config(run_dir / "config.json")):
            return None
        summaries.append(RunSummary(config, read_finished(run_dir)))
    return summaries
