"""One rich console and logging setup shared by the library and the CLI."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler

console = Console(
    stderr=False,
    highlight=False,
    width=int(os.environ["COLUMNS"]) if "COLUMNS" in os.environ else None,
)

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
    logger.setLevel(level)
    logger.addHandler(handler)
    logger.propagate = False
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _configured = True
