"""What the flows keep out of the user's terminal, and how a user error reads there: one line.

- math-verify warns "Timeout is disabled ..." the first time it parses or verifies with its SIGALRM timeouts
  off (scorers/math_verify_scorer.py turns them off: they work only in the main thread). Every run printed two
  such lines; they say nothing the user can act on, so a logging filter drops exactly those records.
- A user error (pipelines/core/errors.py:UserError, a missing optional package, an invalid config) that ends a
  Prefect flow run was logged by Prefect with its traceback, twice (the task run and the flow run). The filter
  keeps Prefect's one-line records ("Encountered exception during execution: PromptFileError(...)", "Finished
  in state Failed(...)") and drops the traceback; the CLI then prints the error as one line and exits with 2.
  Bugs keep their tracebacks.
- A flow run that fails at once (a bad prompts file) can race Prefect's heartbeat thread, whose emit then logs
  "Error emitting event: prefect.flow-run.heartbeat" with a traceback on the way out. Prefect's heartbeat loop
  itself treats a failed heartbeat as debug noise ("Failed to emit heartbeat", DEBUG); so does the filter. The
  same race can stop Prefect's events worker first: then every later event ("prefect.task-run.Running", ...) logs
  "Error emitting event" with "Cannot put items in a stopped service instance", and the worker logs "Service
  'EventsWorker' failed with N pending items" (seen in CI on a busy machine). Those records go too; any other
  emit error stays.

`install()` is idempotent; the CLI calls it, and so does every flow (a deployment runs without the CLI).
"""

from __future__ import annotations

import logging

from pipelines.core.errors import UserError, missing_dependency

MATH_VERIFY_LOGGERS = ("math_verify.parser", "math_verify.grader")
PREFECT_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine", "prefect")


class DropMathVerifyTimeoutWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


class NoTracebackForUserErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and user_message(record.exc_info[1]) is not None:
            record.exc_info, record.exc_text = None, None
        return True


class DropShutdownEmitErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "Error emitting event: prefect.flow-run.heartbeat":
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not (message.startswith("Error emitting event:") and isinstance(error, RuntimeError)
                    and "stopped service instance" in str(error))


class DropStoppedEventsWorker(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Service 'EventsWorker' failed with") and message.endswith("pending items."))


_FILTERS = {name: DropMathVerifyTimeoutWarning() for name in MATH_VERIFY_LOGGERS} | \
    {name: NoTracebackForUserErrors() for name in PREFECT_LOGGERS} | \
    {"prefect.events.utilities": DropShutdownEmitErrors(),
     "prefect._internal.concurrency": DropStoppedEventsWorker()}


def install() -> None:
    for name, flt in _FILTERS.items():
        logger = logging.getLogger(name)
        if flt not in logger.filters:
            logger.addFilter(flt)


def user_message(error: BaseException) -> str | None:
    """The one line a user error prints as ("error: ..." follows from the CLI); None for anything else (a bug)."""
    from pydantic import ValidationError

    from pipelines.core.config import error_lines
    from pipelines.core.io import OutputError
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OutputError):  # an output directory that cannot be written: its path and the reason
        return error.strerror
    if isinstance(error, ValidationError):
        return "invalid configuration: " + "; ".join(error_lines(error))
    if isinstance(error, ModuleNotFoundError):
        missing = missing_dependency(error)
        return None if missing is None else str(missing)
    return None
