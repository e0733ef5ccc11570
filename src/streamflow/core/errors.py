"""The two kinds of failure every entry point (CLI, course scripts, flows) tells apart.

* :class:`InputError` — the user's input is wrong (a file, a date, an option, a month that was
  never ingested). The message names what is wrong; the CLI prints it on one line and exits 2.
* :class:`OperationalError` — the input was fine but something we depend on failed (a report
  that cannot be read, a registry that refuses a write, retraining that produced nothing). The
  CLI prints the message on one line and exits 1.

Anything else is a bug: the CLI prints one line naming the exception, exits 1, and logs the
traceback at DEBUG (``STREAMFLOW_LOG_LEVEL=DEBUG`` shows it). Domain errors subclass one of the
two (keeping their historical base class, e.g. ``ValueError``, so existing ``except`` clauses
keep working). A leaf module: it imports nothing of ours.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of every StreamFlow command."""

    OK = 0
    INTERNAL = 1  # an operational failure or a bug
    BAD_INPUT = 2  # the input is wrong; nothing was written
    INTERRUPTED = 130  # Ctrl-C


class StreamflowError(Exception):
    """Base of the errors StreamFlow raises on purpose (their message is for people)."""

    exit_code: ExitCode = ExitCode.INTERNAL


class InputError(StreamflowError):
    """The user's input is wrong; nothing was written."""

    exit_code = ExitCode.BAD_INPUT


class OperationalError(StreamflowError):
    """A dependency or an operation failed although the input was valid."""

    exit_code = ExitCode.INTERNAL


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code of an exception: its own for StreamFlow errors, INTERNAL otherwise."""
    return exc.exit_code if isinstance(exc, StreamflowError) else ExitCode.INTERNAL
