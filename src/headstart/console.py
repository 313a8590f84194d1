"""One rich console and logging setup shared by the library and the CLI."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.measure import Measurement
from rich.table import Table


class _PipeFriendlyConsole(Console):
    """A console whose tables are never truncated or wrapped when stdout is not a terminal
    (``headstart models | grep lite`` must see whole names): a table is printed as wide as its
    widest row needs, unless ``COLUMNS`` sets the width."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        need = 0
        if "width" not in kwargs and not self.is_terminal and "COLUMNS" not in os.environ:
            wide = self.options.update(max_width=100_000)
            tables = [o for o in objects if isinstance(o, Table)]
            need = max((Measurement.get(self, wide, t).maximum for t in tables), default=0)
        if need <= self.width:
            super().print(*objects, **kwargs)
            return
        before = self.width
        self.width = need  # print(width=) can only narrow the console
        try:
            super().print(*objects, **kwargs)
        finally:
            self.width = before


def secondary_process() -> bool:
    """True in a process of a multi-process run other than the first (Lightning's DDP workers,
    torchrun ranks, SLURM tasks, nodes after the first): it trains silently, the first one
    reports."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "0")
        if value.isdigit() and int(value) != 0:
            return True
    return False


console = _PipeFriendlyConsole(
    stderr=False,
    highlight=False,
    width=int(os.environ["COLUMNS"]) if "COLUMNS" in os.environ else None,
    quiet=secondary_process(),  # messages once per run, not once per process (errors: stderr)
)


#: messages and progress that must not mix with a command's output on stdout
err_console = Console(stderr=True, highlight=False)


@contextmanager
def stdout_reserved() -> Iterator[None]:
    """Send what headstart prints to stderr meanwhile, so that stdout carries only the
    machine-readable document a command prints afterwards (``--json``)."""
    before = console.stderr
    console.stderr = True  # (the console follows sys.stdout/sys.stderr as they are replaced)
    try:
        yield
    finally:
        console.stderr = before


_configured = False


def setup_logging(level: int = logging.INFO) -> None:
    """Route ``headstart`` logs through rich; quiet Lightning's banner lines."""
    global _configured
    if _configured:
        return
    handler = RichHandler(
        console=Console(stderr=True), show_path=False, show_time=False, markup=False
    )
    logger = logging.getLogger("headstart")
    logger.setLevel(max(level, logging.WARNING) if secondary_process() else level)
    logger.addHandler(handler)
    logger.propagate = False
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _configured = True
