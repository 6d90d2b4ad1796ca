"""Retrieval metrics against values worked out by hand on tiny matrices, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import ranks, retrieval_metrics

# Rows are matching pairs. Similarities (text rows x audio columns):
#   t0 [1,   1,   0,   0.6 ]   true 1    ties a1        -> rank 2
#   t1 [0,   0,   0.8, 0.48]   true 0    all >= 0       -> rank 4
#   t2 [0,   0,   1,   0   ]   true 1                   -> rank 1
#   t3 [1,   1,   0,   0.6 ]   true 0.6  a0, a1 above   -> rank 3
# Columns (music -> text): a0 [1,0,0,1] -> 2 (tie t3); a1 [1,0,0,1] true 0 -> 4; a2 [0,.8,1,0] -> 1;
# a3 [.6,.48,0,.6] true .6 ties t0 -> 2.
TEXT = np.array([[1, 0, 0], [0, 0.6, 0.8], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
AUDIO = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float32)


def test_ranks_count_ties_against_the_true_match() -> None:
    similarity = np.array([[0.9, 0.1, 0.3], [0.8, 0.5, 0.5], [0.2, 0.7, 0.6]])
    assert ranks(similarity).tolist() == [1, 3, 2]


def test_ranks_with_explicit_targets() -> None:
    similarity = np.array([[0.9, 0.1, 0.3], [0.8, 0.5, 0.5]])
    assert ranks(similarity, targets=np.array([2, 0])).tolist() == [2, 1]


def test_retrieval_metrics_hand_computed() -> None:
    metrics = retrieval_metrics(TEXT, AUDIO, ks=(1, 2, 5))
    assert metrics["candidates"] == 4
    assert metrics["t2m_R@1"] == pytest.approx(0.25)
    assert metrics["t2m_R@2"] == pytest.approx(0.5)
    assert metrics["t2m_R@5"] == pytest.approx(1.0)
    assert metrics["t2m_MRR"] == pytest.approx(25 / 48)
    assert metrics["t2m_median_rank"] == pytest.approx(2.5)
    assert metrics["m2t_R@1"] == pytest.approx(0.25)
    assert metrics["m2t_R@2"] == pytest.approx(0.75)
    assert metrics["m2t_MRR"] == pytest.approx(0.5625)
    assert metrics["m2t_median_rank"] == pytest.approx(2.0)
    assert metrics["chance_R@1"] == pytest.approx(0.25)
    assert metrics["chance_R@2"] == pytest.approx(0.5)
    assert metrics["chance_R@5"] == pytest.approx(1.0)


def test_vectors_are_normalised_and_chunking_changes_nothing() -> None:
    reference = retrieval_metrics(TEXT, AUDIO, ks=(1, 2, 5))
    assert retrieval_metrics(3 * TEXT, 0.5 * AUDIO, ks=(1, 2, 5), chunk_rows=1) == pytest.approx(reference)


def test_chunked_ranks_match_the_whole_matrix() -> None:
    rng = np.random.default_rng(0)
    text, audio = rng.normal(size=(53, 8)), rng.normal(size=(53, 8))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    t2m, m2t = ranks(text @ audio.T), ranks(audio @ text.T)
    metrics = retrieval_metrics(text, audio, ks=(1, 5, 10), chunk_rows=7)
    assert metrics["t2m_R@5"] == pytest.approx(np.mean(t2m <= 5))
    assert metrics["m2t_R@10"] == pytest.approx(np.mean(m2t <= 10))
    assert metrics["t2m_MRR"] == pytest.approx(np.mean(1 / t2m))
    assert metrics["m2t_median_rank"] == pytest.approx(np.median(m2t))


@pytest.mark.parametrize(
    ("text", "audio", "message"),
    [
        (np.ones((3, 4)), np.ones((2, 4)), "same shape"),
        (np.ones((0, 4)), np.ones((0, 4)), "at least one"),
        (np.zeros((2, 4)), np.ones((2, 4)), "zero vector"),
    ],
)
def test_invalid_inputs_are_refused(text: np.ndarray, audio: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(text, audio)
