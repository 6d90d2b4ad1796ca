"""The opening of a script that must run in a fresh interpreter without some packages importable.

The editable install puts musictext on every path of the test environment, so "works without musictext" can
only be shown by refusing its packages (or torch, transformers...) with a meta-path finder and checking they
are gone before the script's own code runs. The script can read the refused names as ``BLOCKED``.
"""

from __future__ import annotations

from collections.abc import Iterable

_PROLOGUE = """
import importlib.abc, sys

BLOCKED = set({names!r})


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is blocked", name=name)
        return None


sys.meta_path.insert(0, Blocked())
for name in BLOCKED:
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{{name}} is still importable")
"""


def without(packages: Iterable[str], script: str) -> str:
    """``script`` preceded by the code that makes ``packages`` (top-level names) unimportable."""
    return _PROLOGUE.format(names=sorted(set(packages))) + script
