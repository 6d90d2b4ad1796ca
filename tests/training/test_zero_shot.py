"""Zero-shot tagging on hand-built vectors whose scores, AUCs and confusion counts are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.zero_shot import prompt_texts, zero_shot_tags

# 2-D audio; prompt "rock" points at (1, 0), "jazz" and "calm" at (0, 1) and (1, 0).
AUDIO = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]])
ITEM_TAGS = [{"rock", "loud"}, {"rock", "loud"}, {"jazz", "calm", "loud"}, {"jazz", "calm", "loud"}]
TAGS = ["rock", "jazz", "calm", "piano", "loud"]
PROMPTS = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8], [0.6, 0.8]])


def test_perfect_reversed_and_skipped_tags() -> None:
    result = zero_shot_tags(AUDIO, ITEM_TAGS, PROMPTS, TAGS)
    by_tag = {row.tag: row for row in result.tags}
    assert by_tag["rock"].roc_auc == pytest.approx(1.0)
    assert by_tag["rock"].pr_auc == pytest.approx(1.0)
    assert by_tag["jazz"].roc_auc == pytest.approx(1.0)
    # "calm" scores highest on the two items without it: every positive ranks below every negative.
    assert by_tag["calm"].roc_auc == pytest.approx(0.0)
    # Positives at ranks 3 and 4: average precision = (1/3 + 2/4) / 2.
    assert by_tag["calm"].pr_auc == pytest.approx(5 / 12)
    assert by_tag["calm"].positives == 2
    assert result.skipped == {"piano": "no positive items", "loud": "no negative items"}
    assert result.macro_roc_auc == pytest.approx(2 / 3)
    assert result.macro_pr_auc == pytest.approx((1 + 1 + 5 / 12) / 3)


def test_prompt_scale_does_not_matter() -> None:
    plain = zero_shot_tags(AUDIO, ITEM_TAGS, PROMPTS, TAGS)
    scaled = zero_shot_tags(5 * AUDIO, ITEM_TAGS, 0.1 * PROMPTS, TAGS)
    assert scaled.to_dict() == plain.to_dict()


def test_single_label_family_accuracy_and_confusion() -> None:
    audio = np.array(
        [[1, 0, 0], [0.9, 0.1, 0], [0.2, 0.9, 0], [0, 1, 0], [0, 0.1, 1], [0.8, 0, 0.6], [1, 0, 0], [0, 0, 1]]
    )
    item_tags = [{"rock"}, {"rock"}, {"rock"}, {"jazz"}, {"pop"}, {"pop"}, {"rock", "jazz"}, {"live"}]
    tags = ["rock", "jazz", "pop"]
    prompts = np.eye(3)
    result = zero_shot_tags(audio, item_tags, prompts, tags, families={"genre": tags})
    [genre] = result.families
    assert genre.family == "genre"
    assert genre.tags == tags
    # Rows: true rock, jazz, pop; columns: predicted rock, jazz, pop.
    assert genre.confusion == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert genre.accuracy == pytest.approx(4 / 6)
    assert genre.items == 6
    assert genre.excluded == 2


def test_to_dict_is_json() -> None:
    result = zero_shot_tags(AUDIO, ITEM_TAGS, PROMPTS, TAGS, families={"genre": ["rock", "jazz"]})
    data = json.loads(json.dumps(result.to_dict()))
    assert data["families"][0]["confusion"] == [[2, 0], [0, 2]]
    assert data["tags"][0] == {"tag": "rock", "positives": 2, "roc_auc": 1.0, "pr_auc": 1.0}


def test_family_tags_need_prompts() -> None:
    with pytest.raises(ValueError, match="'metal'"):
        zero_shot_tags(AUDIO, ITEM_TAGS, PROMPTS, TAGS, families={"genre": ["rock", "metal"]})


def test_shape_mismatches_are_refused() -> None:
    with pytest.raises(ValueError, match="item tag sets"):
        zero_shot_tags(AUDIO, ITEM_TAGS[:3], PROMPTS, TAGS)
    with pytest.raises(ValueError, match="prompt vectors"):
        zero_shot_tags(AUDIO, ITEM_TAGS, PROMPTS[:4], TAGS)
    with pytest.raises(ValueError, match="dimension"):
        zero_shot_tags(AUDIO, ITEM_TAGS, np.ones((5, 3)), TAGS)


def test_prompt_texts() -> None:
    assert prompt_texts(["rock", "hip hop"]) == ["a rock track", "a hip hop track"]
    assert prompt_texts(["rock"], template="music with {tag}") == ["music with rock"]


def test_family_without_single_label_items_has_no_accuracy() -> None:
    result = zero_shot_tags(AUDIO, [{"loud"}] * 4, PROMPTS, TAGS, families={"genre": ["rock", "jazz"]})
    [genre] = result.families
    assert (genre.accuracy, genre.items, genre.excluded) == (None, 0, 4)
    assert genre.confusion == [[0, 0], [0, 0]]
