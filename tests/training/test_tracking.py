"""Experiment tracking: every step and evaluation reaches TensorBoard (read back from the event files), a crashed
run resumes into the same TensorBoard run with each step once, a finished run found again logs nothing, a fresh
start forgets an abandoned one's curves, a tracker whose package is missing is one ``error:`` line before any
training, and the train flow's artifacts say where the curves are."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from corpus import DATASETS, MODEL, Corpus, build_corpus, small_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from flows.cli import app
from store.errors import InvalidInputError
from training.config import TrainConfig
from training.tracking import TrackerUnavailableError, parse_trackers, tensorboard_dir
from training.trainer import StepReport, TrainResult, train

TRAIN_TAGS = ["train/infonce", "train/loss", "train/lr", "train/squared_distance", "train/temperature"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"), tracks=10, official_splits=False)


def _config(run_id: str, **overrides: Any) -> TrainConfig:
    return small_config(run_id, **{"batch_size": 8, "warmup_steps": 2, "max_steps": 6, "eval_every": 3,
                                   "checkpoint_every": 3, "val_limit": 12, **overrides})


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's event files as TensorBoard shows it (purged steps left out)."""
    events = EventAccumulator(str(tensorboard_dir(run_dir)))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _assert_same_scalars(ours: dict[str, list[tuple[int, float]]],
                         theirs: dict[str, list[tuple[int, float]]]) -> None:
    assert ours.keys() == theirs.keys()
    for tag, values in ours.items():
        assert [step for step, _ in values] == [step for step, _ in theirs[tag]], tag
        assert [value for _, value in values] == pytest.approx([value for _, value in theirs[tag]], rel=1e-6), tag


def _metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def whole(corpus: Corpus) -> TrainResult:
    return train(_config("whole"), corpus.root, show_progress=False)


@pytest.mark.parametrize(("given", "trackers"), [
    ([], ("tensorboard",)),
    (["wandb"], ("tensorboard", "wandb")),
    (["mlflow,WandB", "tensorboard"], ("tensorboard", "wandb", "mlflow")),
    (["none"], ()),
    (["none", "mlflow"], ("mlflow",)),
    ("wandb", ("tensorboard", "wandb")),
])
def test_tensorboard_stays_on_beside_the_trackers_asked_for_unless_none(given: list[str],
                                                                       trackers: tuple[str, ...]) -> None:
    assert parse_trackers(given) == trackers


def test_an_unknown_tracker_names_the_choices() -> None:
    with pytest.raises(InvalidInputError, match="unknown tracker.*neptune; trackers are tensorboard, wandb, mlflow"):
        parse_trackers(["neptune"])
    with pytest.raises(InvalidInputError, match="unknown tracker.*neptune"):
        _config("x", trackers=("neptune",))


def test_every_step_and_evaluation_reaches_tensorboard(whole: TrainResult) -> None:
    scalars = _scalars(whole.run_dir)
    lines = _metrics_lines(whole.run_dir)
    val_tags = {f"val/{name}" for name in lines[0]["val"]}

    assert set(scalars) == {*TRAIN_TAGS, *val_tags} and "val/t2m_R@10" in val_tags
    for tag in TRAIN_TAGS:
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4, 5, 6], tag
    for tag in val_tags:
        assert [step for step, _ in scalars[tag]] == [3, 6], tag
    for line in lines:  # the evaluation's values, as metrics.jsonl has them
        at_step = {tag: dict(values)[line["step"]] for tag, values in scalars.items()}
        assert at_step["train/lr"] == pytest.approx(line["lr"], rel=1e-6)
        assert at_step["train/temperature"] == pytest.approx(line["temperature"], rel=1e-6)
        assert {tag: at_step[tag] for tag in val_tags} == pytest.approx(
            {f"val/{name}": value for name, value in line["val"].items()}, rel=1e-6)
    losses = [loss for _, loss in scalars["train/loss"]]
    assert losses[-1] < losses[0]
    assert [lr for _, lr in scalars["train/lr"]][:2] == pytest.approx([2e-3, 3e-3], rel=1e-6)  # warmup


class Crash(RuntimeError):
    pass


def test_a_resumed_run_appends_to_its_tensorboard_run_with_each_step_once(corpus: Corpus,
                                                                          whole: TrainResult) -> None:
    """The crash comes one step after the checkpoint at 3: step 4 was logged, is purged and is logged again."""
    def crash_at_4(report: StepReport) -> None:
        if report.step == 4:
            raise Crash

    with pytest.raises(Crash):
        train(_config("crashed"), corpus.root, on_progress=crash_at_4, show_progress=False)
    run_dir = corpus.root.runs_dir() / "crashed"
    assert [step for step, _ in _scalars(run_dir)["train/loss"]] == [1, 2, 3, 4]

    train(_config("crashed"), corpus.root, show_progress=False)

    files = sorted(tensorboard_dir(run_dir).iterdir())
    assert len(files) == 2  # one per attempt, read as one run
    _assert_same_scalars(_scalars(run_dir), _scalars(whole.run_dir))  # resume is exact

    reports: list[StepReport] = []
    again = train(_config("crashed"), corpus.root, on_progress=reports.append, show_progress=False)
    assert reports == [] and again.step == 6
    assert sorted(tensorboard_dir(run_dir).iterdir()) == files  # a finished run logs nothing more


def test_a_fresh_start_forgets_the_curves_of_an_attempt_that_never_checkpointed(corpus: Corpus) -> None:
    def crash_at_2(report: StepReport) -> None:
        if report.step == 2:
            raise Crash

    with pytest.raises(Crash):
        train(_config("restarted", checkpoint_every=10, lr=1e-2), corpus.root, on_progress=crash_at_2,
              show_progress=False)
    run_dir = corpus.root.runs_dir() / "restarted"
    assert [step for step, _ in _scalars(run_dir)["train/loss"]] == [1, 2]

    train(_config("restarted", max_steps=3), corpus.root, show_progress=False)

    assert len(list(tensorboard_dir(run_dir).iterdir())) == 1
    assert [step for step, _ in _scalars(run_dir)["train/loss"]] == [1, 2, 3]
    assert [lr for _, lr in _scalars(run_dir)["train/lr"]][1] == pytest.approx(3e-3, rel=1e-6)  # not 1e-2's


def test_no_tracker_writes_no_curves(corpus: Corpus) -> None:
    result = train(_config("quiet", max_steps=3, trackers=()), corpus.root, show_progress=False)

    assert result.step == 3 and not tensorboard_dir(result.run_dir).exists()


def test_a_missing_tracker_package_is_said_before_training(corpus: Corpus, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for package in ("wandb", "mlflow"):
        monkeypatch.setitem(sys.modules, package, None)  # `import` raises ImportError, as when not installed

    with pytest.raises(TrackerUnavailableError, match="tracker package.* not installed: wandb; pip install wandb$"):
        train(_config("unavailable", trackers=("tensorboard", "wandb")), corpus.root, show_progress=False)
    run_dir = corpus.root.runs_dir() / "unavailable"
    assert not (run_dir / "config.json").exists() and not tensorboard_dir(run_dir).exists()

    result = CliRunner().invoke(app, ["train", "--tracker", "mlflow,wandb", "--root", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        "error: tracker package(s) not installed: wandb, mlflow; pip install wandb mlflow"]
    assert not (tmp_path / "data").exists()

    result = CliRunner().invoke(app, ["train", "--tracker", "comet", "--root", str(tmp_path / "data")])
    assert result.exit_code == 2 and "error: unknown tracker(s) comet; trackers are tensorboard, wandb, mlflow" \
        in result.output


@pytest.mark.integration
def test_the_train_flow_artifacts_say_where_the_curves_are(prefect_server: str,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows import learning

    root = tmp_path_factory.mktemp("data")
    build_corpus(root, tracks=8)
    options = {"max_steps": 2, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2, "freeze_encoder": True,
               "device": "cpu", "max_length": 32}
    [summary] = learning.train(MODEL, list(DATASETS), "curves", ["pooled"], root=str(root), options=options)
    keys = ["train-curves-pooled-progress", "train-curves-pooled-curve"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))

    events = tensorboard_dir(summary.result.run_dir).resolve()
    assert {artifact.key for artifact in artifacts} == set(keys)
    for artifact in artifacts:
        assert f"`tensorboard --logdir {events}`" in artifact.description, artifact.key
    assert [step for step, _ in _scalars(summary.result.run_dir)["train/loss"]] == [1, 2]
