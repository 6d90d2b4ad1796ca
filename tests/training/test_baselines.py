"""The seed baselines on the training corpus: the prototype answer is the tag's mean audio vector, the ridge map
is fitted from streamed sums exactly as from all pairs at once, and both beat what no fitting gives."""

from __future__ import annotations

import numpy as np
import pytest
from corpus import DATASETS, MODEL, SPACE, Corpus, build_corpus

import training.baselines as baselines
from training.baselines import LinearBaseline, PrototypeBaseline, SentenceEncoder, fit_baselines
from training.data import ShardReader, Splits, load_splits
from training.metrics import retrieval_metrics
from training.model import EmbedderConfig, TextEmbedder
from training.trainer import validation_set

FRACTIONS = (0.6, 0.2, 0.2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("baselines"), tracks=20, official_splits=False)


@pytest.fixture(scope="module")
def splits(corpus: Corpus) -> Splits:
    return load_splits(corpus.root, DATASETS, MODEL, SPACE, fractions=FRACTIONS, seed=0)


@pytest.fixture(scope="module")
def untrained(splits: Splits) -> TextEmbedder:
    return TextEmbedder(EmbedderConfig(splits.audio_dim, "pooled"))


@pytest.fixture(scope="module")
def fitted(splits: Splits, untrained: TextEmbedder) -> dict:
    val = validation_set(splits.val)
    return fit_baselines(splits.train, SentenceEncoder(untrained), val.texts, val.audio)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_a_tag_prompt_is_answered_with_that_tags_mean_audio_vector(fitted: dict, splits: Splits) -> None:
    prototype: PrototypeBaseline = fitted["prototype (baseline)"]
    jazz = [item for item in splits.train if "jazz" in item.tags]
    assert jazz, "the corpus has jazz-tagged training items"
    reader = ShardReader()
    expected = _unit(_unit(reader.read(jazz)).sum(axis=0))
    reader.close()
    np.testing.assert_allclose(prototype.encode(["a jazz track"])[0], expected, atol=1e-5)
    assert set(prototype.tags) == {tag for item in splits.train for tag in item.tags}


def test_both_baselines_beat_an_untrained_head_on_the_test_pairs(fitted: dict, splits: Splits,
                                                                  untrained: TextEmbedder) -> None:
    test = validation_set(splits.test)
    floor = retrieval_metrics(untrained.encode(test.texts), test.audio)["t2m_MRR"]
    for name in ("prototype (baseline)", "linear (baseline)"):
        assert retrieval_metrics(fitted[name].encode(test.texts), test.audio)["t2m_MRR"] > floor, name


def test_the_ridge_map_from_streamed_blocks_equals_the_one_from_all_pairs(fitted: dict, splits: Splits,
                                                                          untrained: TextEmbedder,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    linear: LinearBaseline = fitted["linear (baseline)"]
    assert linear.penalty in baselines.RIDGE_PENALTIES
    monkeypatch.setattr(baselines, "BLOCK", 7)
    val = validation_set(splits.val)
    streamed = fit_baselines(splits.train, SentenceEncoder(untrained), val.texts, val.audio)["linear (baseline)"]
    assert streamed.penalty == linear.penalty
    np.testing.assert_allclose(streamed.weights, linear.weights, atol=1e-4)


def test_without_tags_there_is_no_prototype_baseline(corpus: Corpus, untrained: TextEmbedder) -> None:
    captioned = load_splits(corpus.root, ["captioned", "bench"], MODEL, SPACE, fractions=FRACTIONS, seed=0)
    val = validation_set(captioned.val)
    assert list(fit_baselines(captioned.train, SentenceEncoder(untrained), val.texts, val.audio)) == [
        "linear (baseline)"]
