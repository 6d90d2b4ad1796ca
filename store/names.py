"""Names that become one folder or file name under the data root: datasets, models, spaces, run ids, reports.

Every such name is checked before it is joined to a path, so ``--name ../../x`` or a model called ``a/b`` is
refused with a message instead of writing outside the data root (or into another dataset's folder). The rule
is one for all of them and strict on purpose: portable on every filesystem, never ``.``/``..``, never hidden,
never a separator, never an option-like leading ``-``.
"""

from __future__ import annotations

import re

from store.errors import UserError

MAX_NAME = 128
_SAFE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{MAX_NAME - 1}}}")
RULE = f"1–{MAX_NAME} letters, digits, '.', '_', '+' or '-', starting with a letter or digit"


class InvalidNameError(UserError, ValueError):
    """A name that cannot be a folder name under the data root."""


def check_name(name: str, what: str) -> str:
    """``name`` itself when it is one safe path component, else :class:`InvalidNameError` naming ``what`` (e.g.
    ``"run id"``, ``"report name"``) and the rule."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name):
        raise InvalidNameError(f"{what} {name!r} cannot be used: a {what} becomes a folder name, so it must be "
                               f"{RULE}")
    return name
