"""The one exception type for mistakes a user can make, and the CLI's exit codes.

Every error a user can cause (a missing folder, an unknown model, a corrupt checkpoint) raises
:class:`HeadstartError` with a message that names the file or option and says what to do. The CLI
prints that message without a traceback and exits with the error's ``exit_code``. Programming
errors still raise ordinary exceptions.

Exit codes (also documented in ``docs/cli.md``):

====  ===================================================================
0     success
1     unexpected internal error (a bug: please report it with the traceback)
2     bad input: data folder, CSV, option value, config file
3     model or weights problem: unknown model, weights not available offline, keys do not fit
4     run folder problem: missing, incomplete, already exists, corrupt checkpoint
5     training stopped: loss became NaN/inf
130   interrupted (Ctrl-C / SIGINT)
====  ===================================================================
"""

from __future__ import annotations


class HeadstartError(Exception):
    """A problem the user can fix; ``str(err)`` is the actionable message."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(_unwrap_worker_message(message))
        if exit_code is not None:
            self.exit_code = exit_code


def _unwrap_worker_message(message: str) -> str:
    """A DataLoader worker re-raises our error in the main process as ``type(err)(msg)`` with
    ``msg = "Caught DataError in DataLoader worker process 0.\nOriginal Traceback ..."``; keep
    only the original one-line message (its last line, after the exception name)."""
    if message.startswith("Caught ") and "\nOriginal Traceback" in message:
        last = message.rstrip().splitlines()[-1]
        name, sep, original = last.partition(": ")
        if sep and name.rsplit(".", 1)[-1].endswith(("Error", "Diverged")):
            return original
    return message


class DataError(HeadstartError):
    """Data folder, CSV or image problem."""

    exit_code = 2


class ModelError(HeadstartError):
    """Unknown model, unavailable weights or weights that do not fit."""

    exit_code = 3


class RunError(HeadstartError):
    """Run folder missing, incomplete, already present, or its checkpoint is corrupt."""

    exit_code = 4


class TrainingDiverged(HeadstartError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 5


class Interrupted(HeadstartError):
    """Ctrl-C (SIGINT) stopped training; the message says how to continue the run."""

    exit_code = 130
