"""Flow runs log a :class:`store.errors.UserError` as its message, without a traceback.

When an exception leaves a flow or task, Prefect's engine logs it with ``logger.exception`` on the flow-run
(or task-run) logger: dozens of traceback lines in the terminal and in the UI before the CLI gets to say
``error: <message>``. For a user's mistake the traceback says nothing the message does not, so a filter on
those two loggers drops it (the message and the failed state stay, in the terminal and on the server); any
other exception, a real crash, keeps its traceback.
"""

from __future__ import annotations

import logging

from store.errors import UserError

ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class UserErrorWithoutTraceback(logging.Filter):
    """Keeps every record, removing the traceback from those about a :class:`UserError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = None
            record.exc_text = None
        return True


def hide_user_error_tracebacks() -> None:
    """Install the filter on Prefect's engine loggers, once per process (Prefect's logging setup keeps a
    logger's filters when it configures its handlers)."""
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorWithoutTraceback) for f in logger.filters):
            logger.addFilter(UserErrorWithoutTraceback())
