"""Training in two real processes (torchrun, gloo on the CPU, :mod:`training.launch`) against one process, on the
same small corpus and configuration as the trainer's tests: the same validation metrics, the same run layout, and
a run checkpointed by one process resumed by two (with the encoder training and gradient accumulation).

Tolerance. Both trainings see the same global batches of 16 pairs in the same order: each of the two processes
embeds its 8 rows, the rows of both are gathered (with their gradients) so the InfoNCE loss is the loss of the 16,
and DDP averages the gradients, which makes them those of one process. What differs is rounding only: each half
batch is padded to its own longest text (masked, but summed in another order), the gradients are summed in two
halves, and each process runs one thread where one process runs two. That is float32 rounding, about 1e-7 of a
value per step; over 20 steps of AdamW the losses stay within 1e-4 (relative) of each other, and a retrieval
metric moves only if two candidates' similarities are that close. So the losses must agree to 1e-4 and each
validation metric to one candidate's share (1/candidates, about 0.04: one query's rank moving past one
neighbour), a median rank to 1. Measured on this 2-core machine: the validation metrics were identical and the
losses differed by about 4e-8 (relative).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from corpus import Corpus, build_corpus, small_config
from safetensors.torch import load_file
from typer.testing import CliRunner

from flows.cli import app
from training.config import TrainConfig
from training.launch import train_in_processes
from training.trainer import StepReport, TrainResult, checkpoint_model_dir, train

LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"), tracks=20, official_splits=False)


def _config(run_id: str, **overrides: Any) -> TrainConfig:
    return small_config(run_id, **{"batch_size": 16, "warmup_steps": 3, "max_steps": 20, "eval_every": 10,
                                   "checkpoint_every": 10, **overrides})


@pytest.fixture(scope="module")
def one_process(corpus: Corpus) -> TrainResult:
    return train(_config("one"), corpus.root, show_progress=False)


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_close_lines(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """One evaluation's metrics line of two trainings, within the tolerance of the module docstring."""
    assert ours.keys() == theirs.keys() and ours["step"] == theirs["step"]
    for name in ("loss", "infonce", "lr", "temperature"):
        assert ours[name] == pytest.approx(theirs[name], rel=LOSS_TOLERANCE), name
    candidates = theirs["val"]["candidates"]
    assert ours["val"]["candidates"] == candidates >= 20
    for name, value in theirs["val"].items():
        assert ours["val"][name] == pytest.approx(value, abs=1 if "rank" in name else 1 / candidates), name


def _layout(run_dir: Path) -> list[str]:
    """The run's files, TensorBoard's event files by count (their names hold a host, a time and a pid)."""
    files = [path.relative_to(run_dir) for path in run_dir.rglob("*") if path.is_file()]
    return sorted(str(path.parent / "events") if path.name.startswith("events.") else str(path) for path in files)


def test_two_processes_train_to_the_metrics_and_run_layout_of_one(corpus: Corpus, one_process: TrainResult) -> None:
    two = train_in_processes(_config("two", devices=2), corpus.root)

    ours, theirs = _lines(two.run_dir), _lines(one_process.run_dir)
    assert [line["step"] for line in ours] == [10, 20]
    for line, other in zip(ours, theirs, strict=True):
        _assert_close_lines(line, other)
    assert theirs[-1]["val"]["t2m_R@10"] >= 0.9  # both trained: the comparison is not one of two untrained heads
    assert (two.step, two.best_step, two.split_sizes) == (one_process.step, one_process.best_step,
                                                          one_process.split_sizes)
    assert _layout(two.run_dir) == _layout(one_process.run_dir)
    assert _layout(two.run_dir).count("tensorboard/events") == 1  # only the main process logged
    for which in ("best", "last"):
        head, other = (load_file(checkpoint_model_dir(run, which) / "head.safetensors")
                       for run in (two.run_dir, one_process.run_dir))
        assert all(torch.allclose(head[name], other[name], rtol=1e-3, atol=1e-5) for name in other)
    saved = json.loads((two.run_dir / "config.json").read_text())
    assert saved["devices"] == 2 and TrainConfig.from_json(saved).differences(_config("two")) == []


class Crash(RuntimeError):
    pass


def test_two_processes_resume_a_run_that_one_process_checkpointed(corpus: Corpus) -> None:
    """With the encoder training too (DDP must skip the encoder's unused pooler) and gradient accumulation (two
    micro-batches of 8 per step, 4 rows each per process): dropout makes this run differ from one process beyond
    rounding, so it is checked for what a resume keeps, not against the other run."""
    config = _config("resumed", head="frames", freeze_encoder=False, encoder_lr=1e-4, batch_size=8, grad_accum=2,
                     max_steps=6, eval_every=3, checkpoint_every=3, max_length=24, trackers=())

    def crash_after_the_checkpoint(report: StepReport) -> None:
        if report.step == 4:
            raise Crash

    with pytest.raises(Crash):
        train(config, corpus.root, on_progress=crash_after_the_checkpoint, show_progress=False)
    run_dir = corpus.root.runs_dir() / "resumed"
    checkpointed = _lines(run_dir)
    encoder = checkpoint_model_dir(run_dir, "last") / "encoder" / "model.safetensors"
    at_step_3 = load_file(encoder)

    resumed = train_in_processes(replace(config, devices=2), corpus.root)

    lines = _lines(run_dir)
    assert [line["step"] for line in lines] == [3, 6] and lines[0] == checkpointed[0]
    assert lines[1]["val"]["t2m_R@10"] > lines[1]["val"]["chance_R@10"]
    assert (resumed.step, resumed.last_metrics) == (6, lines[1]["val"])
    assert torch.load(run_dir / "checkpoints/last/trainer.pt", weights_only=True)["state"]["step"] == 6
    after = load_file(encoder)
    assert any(not torch.equal(after[name], at_step_3[name]) for name in at_step_3)  # the encoder trained


def test_device_counts_a_user_cannot_have_are_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    too_many = (os.cpu_count() or 1) + 1
    for options, message in ((["--devices", "0"], "devices must be positive, got 0"),
                             (["--devices", "2", "--batch-size", "7"], "batch_size 7 does not split evenly over 2"),
                             (["--devices", str(too_many), "--batch-size", str(too_many)],
                              f"--devices {too_many} asks for more than the {too_many - 1} CPU core(s)")):
        result = runner.invoke(app, ["train", "--device", "cpu", "--root", str(tmp_path), *options])
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("\n") == 1


def test_a_process_count_other_than_the_configured_one_is_refused(corpus: Corpus) -> None:
    with pytest.raises(ValueError, match="configured for 2 device.*runs in 1 process"):
        train(replace(_config("alone"), devices=2), corpus.root, show_progress=False)
