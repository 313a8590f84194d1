"""Run ``headstart``'s real entry point (:func:`headstart.cli.main`: error handling, exit codes)
inside the test process: a subprocess costs ~5 s of imports, this costs nothing."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import pytest

from headstart.cli import main
from headstart.console import console, setup_logging


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """stdout + stderr, whitespace runs collapsed (rich wraps long lines)."""
        return " ".join((self.stdout + "\n" + self.stderr).split())


def run_main(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> CliResult:
    """``headstart <args>`` as the console script runs it; returns exit code and output.

    Exceptions other than the ones ``main`` handles propagate (a traceback fails the test).
    """
    setup_logging()
    monkeypatch.setattr(sys, "argv", ["headstart", *args])
    monkeypatch.setattr(console, "width", 400)  # no wrapping inside file names
    for h in logging.getLogger("headstart").handlers:
        if hasattr(h, "console"):
            monkeypatch.setattr(h.console, "width", 400)
    capsys.readouterr()
    _rebind_stale_stream_handlers()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return CliResult(code, out.out, out.err)


def _rebind_stale_stream_handlers() -> None:
    """Libraries (Lightning) attach a StreamHandler to the ``sys.stderr`` of the moment they
    are imported, under pytest an earlier test's capture stream, closed by now; point such
    handlers at the current stream instead of letting logging print its own error report."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    for lg in loggers:
        for h in getattr(lg, "handlers", []):
            stream = getattr(h, "stream", None)
            if isinstance(h, logging.StreamHandler) and getattr(stream, "closed", False):
                h.stream = sys.stderr  # (setStream would flush the closed one)
