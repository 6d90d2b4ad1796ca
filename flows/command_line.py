"""What every ``musictext`` command shares: the ``--root`` option, the data root it names, and the one-line error.

Kept out of :mod:`flows.cli` so the commands defined in their own modules (``serve``, ``export``,
``export-corpus``, ``index``) use the same option and the same error line without importing the whole CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from flows.progress import console as errors
from store.layout import DataRoot

EXIT_PROBLEMS = 1
"""``verify`` (or the pipeline's verify stage) found problems: a verdict other than ok."""
EXIT_USER_ERROR = 2
"""A user's mistake (an option, a name, a setting, an input to make first), said in one ``error:`` line."""

RootOption = Annotated[Path | None, typer.Option("--root", help="Data root (default: MUSICTEXT_ROOT or ./data).")]


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """``error: <message>`` on stderr, one line however long (never wrapped, never a traceback), and exit."""
    errors.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def root_arg(root: Path | None) -> str | None:
    return str(root) if root else None


def data_root_of(root: Path | None) -> DataRoot:
    """The data root a command works on, read through the settings: a bad setting or a root that is a file is said
    here, before any flow starts."""
    from store.settings import load_settings  # pydantic-settings: loaded by the commands, not by --help

    return DataRoot(load_settings(root=root_arg(root)).root)
