"""Split names: one vocabulary (``train``, ``val``, ``test``) in every manifest, and the rule that places a
published name in it.

Sources publish their own names (``valid``, ``validation``, FMA's ``training``, AudioSet's ``eval``,
MusicBench's ``test_a``); the catalog writes the canonical one, so training, evaluation and reports compare
like with like across datasets.
"""

from __future__ import annotations

SPLITS = ("train", "val", "test")
HELD_OUT_SPLIT = "test"
_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "eval": "test", "evaluation": "test",
}
_HELD_OUT_PREFIXES = ("test", "eval")
"""Published splits such as MusicBench's ``test_a`` and ``eval_mcaps``: whatever their suffix, they are held out."""


def canonical_split(name: str | None) -> str | None:
    """``name`` as ``train``/``val``/``test``, ``None`` when the source publishes no split.

    Raises ``ValueError`` on a name it cannot place: guessing could put evaluation audio into training.
    """
    if name is None or not name.strip():
        return None
    key = name.strip().lower()
    if key in _NAMES:
        return _NAMES[key]
    if key.startswith(_HELD_OUT_PREFIXES):
        return HELD_OUT_SPLIT
    raise ValueError(f"split {name!r} is not one musictext knows; use one of {', '.join(sorted(_NAMES))} "
                     "(or a name starting with test/eval)")
