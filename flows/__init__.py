"""Prefect flows and the ``musictext`` CLI.

Offline defaults for Prefect's embedded server, set before Prefect is imported: no telemetry (there is
no network to send it to) and a start-up timeout that survives a busy 2-core machine. A user's own
environment or profile still wins. Flow runs in every process that imports a flow (the CLI, workers) log a
user's mistake without a traceback (:mod:`flows.user_errors`).
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from flows.user_errors import hide_user_error_tracebacks  # noqa: E402  (after the defaults above)

hide_user_error_tracebacks()
