"""The errors a user can act on: one family, so every layer raises them and one place turns them into a message.

A :class:`UserError` means the input is wrong (an option, a name, a setting, a missing or empty input the
user must provide first), not the code. Its message is the whole story: what is wrong and what to do. The
``musictext`` CLI prints it as one ``error: <message>`` line with exit code 2, and flow runs log it without a
traceback (:mod:`flows.user_errors`), so a typo never looks like a crash. It lives in ``store`` because every
layer may import ``store``; each layer subclasses it where its own errors are defined.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user asked for or set up that cannot work as given; the message says how to fix it."""


class DataRootError(UserError):
    """The data root cannot be used as one (it is a file, say)."""


class MissingInputError(UserError, FileNotFoundError):
    """Something a command needs was not made yet (a manifest, embeddings, a training run); the message names the
    command that makes it."""


class InvalidInputError(UserError, ValueError):
    """Values a user gave (options, a configuration, runs chosen together) that cannot work as given."""
