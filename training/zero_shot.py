"""Zero-shot tagging: does the text embedder place "a rock track" near rock audio, with no tag training?

The caller encodes one prompt per tag with the text embedder (``prompt_texts`` builds them); each audio item is
scored against every prompt by cosine similarity. Per tag that gives a ranking of the items, scored with ROC-AUC
and PR-AUC (average precision); for a single-label family such as genre the best-scoring tag of the family is a
prediction, scored with accuracy and a confusion matrix.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from training.metrics import unit_rows

DEFAULT_TEMPLATE = "a {tag} track"


def prompt_texts(tags: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One prompt per tag, in tag order, for the caller to encode with the text embedder."""
    return [template.format(tag=tag) for tag in tags]


@dataclass(frozen=True)
class TagResult:
    tag: str
    positives: int
    roc_auc: float
    pr_auc: float


@dataclass(frozen=True)
class FamilyResult:
    """Argmax classification within one single-label family; ``confusion[true][predicted]`` in ``tags`` order.

    Only items carrying exactly one tag of the family take part; ``excluded`` counts the others (none or
    several of its tags), which have no single right answer.
    """

    family: str
    tags: list[str]
    accuracy: float | None
    """``None`` when no item has exactly one tag of the family."""
    confusion: list[list[int]]
    items: int
    excluded: int


@dataclass(frozen=True)
class ZeroShotResult:
    tags: list[TagResult]
    skipped: dict[str, str]
    """Tags left out of the averages, with why: AUC is undefined when only one class is present."""
    macro_roc_auc: float | None
    macro_pr_auc: float | None
    families: list[FamilyResult]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _check_inputs(audio: np.ndarray, item_tags: Sequence[Collection[str]], prompts: np.ndarray, tags: Sequence[str],
                  families: Mapping[str, Sequence[str]]) -> None:
    if len(item_tags) != len(audio):
        raise ValueError(f"{len(audio)} audio vectors but {len(item_tags)} item tag sets")
    if len(prompts) != len(tags):
        raise ValueError(f"{len(tags)} tags but {len(prompts)} prompt vectors")
    if prompts.shape[1] != audio.shape[1]:
        raise ValueError(f"prompt dimension {prompts.shape[1]} differs from audio dimension {audio.shape[1]}")
    for family, members in families.items():
        missing = [tag for tag in members if tag not in tags]
        if missing:
            raise ValueError(f"family {family!r} names tags without a prompt: {', '.join(map(repr, missing))}")


def _tag_result(tag: str, labels: np.ndarray, scores: np.ndarray) -> TagResult | str:
    """The tag's AUCs, or why they are undefined."""
    positives = int(labels.sum())
    if positives == 0:
        return "no positive items"
    if positives == len(labels):
        return "no negative items"
    roc_auc, pr_auc = roc_auc_score(labels, scores), average_precision_score(labels, scores)
    return TagResult(tag, positives, float(roc_auc), float(pr_auc))


def _single_labels(members: Sequence[str], item_tags: Sequence[Collection[str]]) -> np.ndarray:
    """Index in ``members`` of each item's one tag of the family; -1 where it has none or several."""
    found = [[index for index, tag in enumerate(members) if tag in tags] for tags in item_tags]
    return np.array([hits[0] if len(hits) == 1 else -1 for hits in found], dtype=np.int64)


def _family_result(family: str, members: Sequence[str], item_tags: Sequence[Collection[str]],
                   scores: np.ndarray) -> FamilyResult:
    """``scores`` holds the family's columns only, in ``members`` order; ties go to the earlier tag."""
    labels = _single_labels(members, item_tags)
    keep = labels >= 0
    true, predicted = labels[keep], np.argmax(scores[keep], axis=1)
    matrix = np.zeros((len(members), len(members)), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    accuracy = float(np.mean(true == predicted)) if len(true) else None
    return FamilyResult(family, list(members), accuracy, matrix.tolist(), int(keep.sum()), int((~keep).sum()))


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def zero_shot_tags(
    audio: np.ndarray,
    item_tags: Sequence[Collection[str]],
    prompt_vectors: np.ndarray,
    tags: Sequence[str],
    families: Mapping[str, Sequence[str]] | None = None,
) -> ZeroShotResult:
    """Score audio ``[n, d]`` against one prompt vector per tag (``prompt_vectors[t]`` encodes ``tags[t]``).

    ``item_tags[i]`` is the set of tags of item ``i``. ``families`` maps a single-label family name to its
    tags (each must have a prompt); each family gets argmax accuracy and a confusion matrix.
    """
    audio, prompt_vectors, families = np.asarray(audio), np.asarray(prompt_vectors), families or {}
    _check_inputs(audio, item_tags, prompt_vectors, tags, families)
    scores = unit_rows(audio, "audio") @ unit_rows(prompt_vectors, "prompt vectors").T
    results, skipped = [], {}
    for column, tag in enumerate(tags):
        labels = np.array([tag in item for item in item_tags], dtype=np.int64)
        outcome = _tag_result(tag, labels, scores[:, column])
        if isinstance(outcome, str):
            skipped[tag] = outcome
        else:
            results.append(outcome)
    columns = {tag: column for column, tag in enumerate(tags)}
    family_results = [
        _family_result(family, members, item_tags, scores[:, [columns[tag] for tag in members]])
        for family, members in families.items()
    ]
    return ZeroShotResult(
        results, skipped, _mean_or_none([r.roc_auc for r in results]), _mean_or_none([r.pr_auc for r in results]),
        family_results,
    )
