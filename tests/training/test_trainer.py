"""The text embedder (masked enrichment, encode, save/load) and the trainer on a real corpus with the real
all-MiniLM-L6-v2: training beats the untrained baseline, a crashed run resumes to the weights of one that
never stopped, early stopping, stage 2 from stage 1, and refusals a user can act on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from corpus import DATASETS, DIM, MODEL, SPACE, Corpus, build_corpus
from safetensors.torch import load_file

from embedders.enrichment import enrich
from training.config import TrainConfig, read_config
from training.data import load_splits
from training.model import (
    EmbedderConfig,
    TextEmbedder,
    load_text_embedder,
    masked_enrich,
)
from training.trainer import StepReport, checkpoint_model_dir, train, validation_set, warmup_cosine

FRACTIONS = (0.6, 0.4, 0.0)
TEXTS = ["A calm jazz song featuring piano.", "Metal music played on drums, with an angry feel.", "A happy track."]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Hashed splits only, so the validation split is large enough (about 27 groups) for Recall@10 to mean
    something."""
    return build_corpus(tmp_path_factory.mktemp("corpus"), tracks=20, official_splits=False)


@pytest.fixture(scope="module")
def pooled() -> TextEmbedder:
    return TextEmbedder(EmbedderConfig(DIM, "pooled"))


def _config(run_id: str = "run", **overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": MODEL, "space": SPACE, "datasets": DATASETS, "run_id": run_id, "head": "pooled",
        "freeze_encoder": True,
        "batch_size": 16, "lr": 3e-3, "warmup_steps": 3, "max_steps": 20, "eval_every": 10,
        "checkpoint_every": 10, "patience": None, "fractions": FRACTIONS, "max_length": 32, "device": "cpu",
    }
    return TrainConfig(**{**settings, **overrides})


def _metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- the embedder -------------------------------------------------------------------------------------------


def test_masked_enrichment_equals_numpy_enrichment_of_the_unpadded_tokens() -> None:
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(5, 7, 4))
    lengths = [7, 4, 2, 1]
    mask = np.array([[1] * n + [0] * (7 - n) for n in lengths] + [[0, 0, 1, 1, 1, 1, 1]])  # last row left-padded
    frames[mask == 0] = 1e6  # padding must not leak into any statistic

    enriched = masked_enrich(torch.tensor(frames, dtype=torch.float32), torch.tensor(mask))

    assert enriched.shape == (5, 12) and enriched.dtype == torch.float32
    for row in range(5):
        tokens = frames[row][mask[row] == 1]  # [n, D]
        np.testing.assert_allclose(enriched[row].numpy(), enrich(tokens.T[None])[0], atol=1e-5)


def test_masked_enrichment_is_differentiable_and_padding_gets_no_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 6, 3, generator=generator, requires_grad=True)
    direction = torch.randn(9, generator=generator)  # any objective but the (constant) norm
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])

    (masked_enrich(frames, mask) @ direction).sum().backward()

    assert frames.grad is not None and torch.isfinite(frames.grad).all()
    assert torch.equal(frames.grad[0, 4:], torch.zeros(2, 3))
    assert frames.grad[0, :4].abs().sum() > 0


def test_masked_enrichment_refuses_a_row_without_tokens() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        masked_enrich(torch.ones(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]))


def test_frames_head_needs_three_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 3"):
        EmbedderConfig(47, "frames")


@pytest.mark.parametrize("head", ["pooled", "frames"])
def test_encode_gives_unit_float32_rows_and_leaves_the_mode_alone(head: str, pooled: TextEmbedder) -> None:
    embedder = pooled if head == "pooled" else TextEmbedder(EmbedderConfig(DIM, head))
    embedder.train()

    vectors = embedder.encode(TEXTS, batch_size=2)

    assert vectors.shape == (3, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert embedder.training
    embedder.train(False)


def test_untrained_embedders_are_reproducible_from_their_seed(pooled: TextEmbedder) -> None:
    same = TextEmbedder(EmbedderConfig(DIM, "pooled", seed=0))
    other = TextEmbedder(EmbedderConfig(DIM, "pooled", seed=1))

    np.testing.assert_array_equal(same.encode(TEXTS), pooled.encode(TEXTS))
    assert not np.allclose(other.encode(TEXTS), pooled.encode(TEXTS))


def test_a_saved_embedder_loads_to_the_same_vectors(pooled: TextEmbedder, tmp_path: Path) -> None:
    pooled.save(tmp_path / "saved")

    loaded = load_text_embedder(tmp_path / "saved")

    assert loaded.config == pooled.config
    np.testing.assert_array_equal(loaded.encode(TEXTS), pooled.encode(TEXTS))
    with pytest.raises(FileNotFoundError, match="not a saved text embedder"):
        load_text_embedder(tmp_path)


def test_a_frozen_encoder_stays_in_eval_mode_without_gradients() -> None:
    embedder = TextEmbedder(EmbedderConfig(DIM, "pooled"), freeze_encoder=True)
    embedder.train()

    embedder(TEXTS).sum().backward()

    assert embedder.training and not embedder.encoder.training
    assert all(p.grad is None for p in embedder.encoder.parameters())
    assert embedder.head.project.weight.grad is not None


# --- the trainer --------------------------------------------------------------------------------------------


def test_warmup_then_cosine_schedule() -> None:
    factor = warmup_cosine(warmup_steps=3, max_steps=13)
    assert [factor(step) for step in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(8) == pytest.approx(0.5)  # half way through the cosine
    assert factor(13) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"stage": 2}, "mse_weight"),
    ({"mse_weight": 1.0}, "stage 1"),
    ({"run_id": "../elsewhere"}, "run_id"),
    ({"batch_size": 0}, "batch_size"),
    ({"head": "mlp"}, "head"),
])
def test_config_errors_name_the_setting(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_short_training_beats_the_untrained_baseline_and_chance(corpus: Corpus, pooled: TextEmbedder) -> None:
    splits = load_splits(corpus.root, DATASETS, MODEL, SPACE, fractions=FRACTIONS, seed=0)
    validation = validation_set(splits.val)
    candidates = len(validation.texts)
    chance = 10 / candidates
    baseline = validation.evaluate(pooled)

    result = train(_config("short"), corpus.root, show_progress=False)

    assert candidates >= 20 and baseline["candidates"] == candidates
    assert baseline["chance_R@10"] == pytest.approx(chance)
    assert baseline["t2m_R@10"] < chance + 0.25
    assert result.best_metrics["t2m_R@10"] >= 0.9 > baseline["t2m_R@10"] + 0.3
    assert result.best_metrics["t2m_R@1"] > 4 * baseline["t2m_R@1"] + 0.3
    lines = _metrics_lines(result.run_dir)
    assert [line["step"] for line in lines] == [10, 20]
    assert lines[0]["loss"] > lines[1]["loss"]
    assert result.best_metrics == next(line["val"] for line in lines if line["step"] == result.best_step)
    assert read_config(result.run_dir / "config.json") == _config("short")
    assert validation.evaluate(load_text_embedder(result.best_model)) == pytest.approx(result.best_metrics)


class Crash(RuntimeError):
    pass


def test_a_crashed_run_resumes_to_the_weights_of_an_uninterrupted_one(corpus: Corpus) -> None:
    """The encoder trains too (dropout draws from the restored RNG), with accumulation (the training items make
    6 micro-batches of 8, 3 steps, per epoch), and the crash comes one step after a mid-epoch checkpoint, so
    that step's work and its metrics line are lost and redone; the last step crosses into the next epoch."""
    settings = {"head": "frames", "freeze_encoder": False, "batch_size": 8, "grad_accum": 2, "lr": 1e-3,
                "encoder_lr": 1e-4, "warmup_steps": 2, "max_steps": 4, "checkpoint_every": 2, "eval_every": 3,
                "max_length": 24, "val_limit": 12}
    whole = train(_config("whole", **settings), corpus.root, show_progress=False)
    assert whole.split_sizes["train"] // 8 == 6

    def crash_at_3(report: StepReport) -> None:
        if report.step == 3:
            raise Crash

    with pytest.raises(Crash):
        train(_config("crashed", **settings), corpus.root, on_progress=crash_at_3, show_progress=False)
    crashed_dir = corpus.root.runs_dir() / "crashed"
    assert torch.load(crashed_dir / "checkpoints/last/trainer.pt", weights_only=True)["state"]["step"] == 2
    assert [line["step"] for line in _metrics_lines(crashed_dir)] == [3]
    checkpoints = crashed_dir / "checkpoints"
    (checkpoints / "last").rename(checkpoints / ".last.old")  # as if killed between the two renames of a swap
    (checkpoints / ".last.4242.0badf00d.tmp" / "model").mkdir(parents=True)  # a half-written checkpoint
    steps: list[int] = []
    resumed = train(_config("crashed", **settings), corpus.root, on_progress=lambda r: steps.append(r.step),
                    show_progress=False)

    assert steps == [3, 4]
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best", "last"]
    assert (resumed.step, resumed.best_step, resumed.last_metrics) == (whole.step, whole.best_step, whole.last_metrics)
    assert _metrics_lines(crashed_dir) == _metrics_lines(whole.run_dir)
    for which in ("last", "best"):
        ours, theirs = checkpoint_model_dir(crashed_dir, which), checkpoint_model_dir(whole.run_dir, which)
        for part in ("head.safetensors", "encoder/model.safetensors"):
            _assert_same_tensors(load_file(ours / part), load_file(theirs / part))
    ours, theirs = (torch.load(run / "checkpoints/last/trainer.pt", weights_only=True)
                    for run in (crashed_dir, whole.run_dir))
    assert ours["state"] == theirs["state"] and ours["scheduler"] == theirs["scheduler"]
    assert torch.equal(ours["loss"]["log_temperature"], theirs["loss"]["log_temperature"])
    for state, other in zip(ours["optimizer"]["state"].values(), theirs["optimizer"]["state"].values(), strict=True):
        _assert_same_tensors(state, other)


def _assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    changed = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert not changed, f"tensors differ after resuming: {changed[:5]}"


def test_a_finished_run_is_a_no_op_and_another_config_is_refused(corpus: Corpus) -> None:
    config = _config("finished", max_steps=4, eval_every=2, checkpoint_every=2)
    first = train(config, corpus.root, show_progress=False)
    reports: list[StepReport] = []

    again = train(replace(config, num_workers=1), corpus.root, on_progress=reports.append, show_progress=False)

    assert reports == [] and again == first
    with pytest.raises(ValueError, match=r"another configuration \(lr: 0.003 → 0.001\).*new run_id"):
        train(replace(config, lr=1e-3), corpus.root, show_progress=False)


def test_an_attempt_that_never_checkpointed_starts_afresh_with_a_new_config(corpus: Corpus) -> None:
    def crash(report: StepReport) -> None:
        raise Crash

    with pytest.raises(Crash):
        train(_config("retry", max_steps=4, eval_every=1, checkpoint_every=4), corpus.root, on_progress=crash,
              show_progress=False)
    assert (corpus.root.runs_dir() / "retry" / "checkpoints" / "best").exists()  # evaluated at step 1, no last

    result = train(_config("retry", max_steps=2, eval_every=2, checkpoint_every=2), corpus.root, show_progress=False)

    assert [line["step"] for line in _metrics_lines(result.run_dir)] == [2] and result.best_step == 2
    assert json.loads((result.run_dir / "config.json").read_text())["max_steps"] == 2


def test_early_stopping_after_patience_evaluations_without_improvement(corpus: Corpus) -> None:
    # A learning rate too small to change the ranks: the first evaluation stays the best.
    config = _config("patient", lr=1e-12, max_steps=20, eval_every=2, checkpoint_every=100, patience=2)

    result = train(config, corpus.root, show_progress=False)

    assert result.stopped_early and result.step == 6 and result.best_step == 2
    assert [line["step"] for line in _metrics_lines(result.run_dir)] == [2, 4, 6]
    assert torch.load(result.run_dir / "checkpoints/last/trainer.pt", weights_only=True)["state"]["step"] == 6
    # The frozen encoder is stored once: best (step 2) and last (step 6) hold one file between them.
    best, last = (checkpoint_model_dir(result.run_dir, which) / "encoder/model.safetensors"
                  for which in ("best", "last"))
    assert best.samefile(last) and best.stat().st_nlink == 2


def test_stage_two_starts_from_stage_one_and_adds_the_squared_distance(corpus: Corpus) -> None:
    stage_one = train(_config("stage1", max_steps=10, eval_every=10), corpus.root, show_progress=False)
    config = _config("stage2", stage=2, mse_weight=0.5, init_from="stage1", lr=1e-12, max_steps=2, eval_every=2,
                     checkpoint_every=2)

    stage_two = train(config, corpus.root, show_progress=False)

    # With a negligible learning rate stage 2 scores what stage 1 left it.
    assert stage_two.last_metrics == stage_one.best_metrics
    line = _metrics_lines(stage_two.run_dir)[-1]
    assert line["squared_distance"] > 0
    assert line["loss"] == pytest.approx(line["infonce"] + 0.5 * line["squared_distance"], rel=1e-6)
    with pytest.raises(ValueError, match="init_from .* another model: head 'pooled'"):
        train(replace(config, run_id="stage2-frames", head="frames"), corpus.root, show_progress=False)
