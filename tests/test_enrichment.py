from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np
import pytest

from embedders.enrichment import ENRICHMENT, IQR_OF_UNIT_NORMAL, enrich, enriched_dim

# One clip, D = 2 dimensions, T = 4 frames.
TINY = np.array([[[1.0, 2.0, 4.0, 8.0], [3.0, 3.0, 0.0, 6.0]]], dtype=np.float32)


def test_tiny_case_matches_hand_computed_values():
    # mean:    (1+2+4+8)/4 = 3.75                     (3+3+0+6)/4 = 3
    # quartiles (linear, positions 0.75 and 2.25 of the sorted values):
    #   sorted [1,2,4,8]: q25 = 1 + 0.75*1 = 1.75, q75 = 4 + 0.25*4 = 5    -> IQR 3.25
    #   sorted [0,3,3,6]: q25 = 0 + 0.75*3 = 2.25, q75 = 3 + 0.25*3 = 3.75 -> IQR 1.5
    # drift:   diffs [1,2,4] -> 7/3                  diffs [0,-3,6] -> 1
    raw = [3.75, 3.0, 3.25 / 1.34898, 1.5 / 1.34898, 7 / 3, 1.0]
    # |raw|^2 = 14.0625 + 9 + 5.80438 + 1.23643 + 5.44444 + 1 = 36.54776, |raw| = 6.045474
    expected = [0.6202987, 0.4962390, 0.3985176, 0.1839312, 0.3859637, 0.1654130]
    np.testing.assert_allclose(np.array(raw) / 6.045474, expected, atol=1e-6)

    vectors = enrich(TINY)

    assert vectors.shape == (1, 6) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[0], expected, atol=1e-6)


def test_vectors_are_unit_norm_with_three_blocks_of_d():
    frames = np.random.default_rng(0).normal(3.0, 2.0, size=(3, 5, 50)).astype(np.float32)

    vectors = enrich(frames)

    assert vectors.shape == (3, enriched_dim(5)) == (3, 15)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_blocks_are_mean_spread_and_mean_of_first_differences():
    frames = np.random.default_rng(1).normal(size=(2, 4, 37))

    vectors = enrich(frames)

    q25, q75 = np.percentile(frames, [25, 75], axis=-1)
    raw = np.concatenate([frames.mean(-1), (q75 - q25) / IQR_OF_UNIT_NORMAL, np.diff(frames, axis=-1).mean(-1)],
                         axis=-1)
    np.testing.assert_allclose(vectors, raw / np.linalg.norm(raw, axis=-1, keepdims=True), atol=1e-6)


def test_the_spread_constant_is_the_iqr_of_a_unit_normal_to_all_its_digits():
    # shared/navidrome.md: (q75 - q25) / 1.3489795003921634, the reference's constant
    assert IQR_OF_UNIT_NORMAL == 1.3489795003921634
    assert abs(IQR_OF_UNIT_NORMAL - 2 * NormalDist().inv_cdf(0.75)) < 1e-15
    assert ENRICHMENT == "concat(mean,iqr/1.3489795003921634,mean(diff));l2"  # recorded in every shard


def test_each_clip_is_enriched_independently_of_its_batch():
    other = np.random.default_rng(2).normal(size=(1, 2, 4)).astype(np.float32) * 100

    together = enrich(np.concatenate([TINY, other]))

    np.testing.assert_array_equal(together[0], enrich(TINY)[0])


def test_single_frame_has_zero_spread_and_drift():
    frames = np.array([[[3.0], [4.0]]], dtype=np.float32)

    vectors = enrich(frames)

    np.testing.assert_allclose(vectors[0], [0.6, 0.8, 0.0, 0.0, 0.0, 0.0], atol=1e-7)


def test_all_zero_frames_give_a_zero_vector_without_nan_or_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectors = enrich(np.zeros((2, 3, 10), dtype=np.float32))

    assert vectors.shape == (2, 9)
    assert not np.any(vectors)


def test_constant_nonzero_frames_keep_only_the_mean_block():
    vectors = enrich(np.full((1, 2, 10), -2.0, dtype=np.float32))

    np.testing.assert_allclose(vectors[0], [-(0.5**0.5), -(0.5**0.5), 0, 0, 0, 0], atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 2, 0), (2, 3), (1, 1, 1, 4)])
def test_frames_without_time_steps_or_wrong_rank_are_rejected(shape):
    with pytest.raises(ValueError, match="frame|time"):
        enrich(np.zeros(shape, dtype=np.float32))

