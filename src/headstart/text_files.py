"""Reading texts, shared by the data layer and the torch-free text export predictor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from headstart.errors import DataError

TEXT_EXTENSIONS = frozenset({".txt", ".text"})


def read_text_file(path: Path) -> str:
    """A text file as str: UTF-8 (BOM tolerated), else Latin-1 (never fails on bytes)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def texts_from_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, str]]:
    """``(name, text)`` per input for prediction: a raw string (its own name), or an existing
    ``.txt`` file (read; its path is the name)."""
    out: list[tuple[str, str]] = []
    for item in inputs:
        s = str(item)
        p = Path(s)
        if p.suffix.lower() in TEXT_EXTENSIONS and len(s) < 4096 and p.is_file():
            out.append((s, read_text_file(p)))
        else:
            out.append((s, s))
    if not out or not any(t.strip() for _, t in out):
        raise DataError("no text to predict: give one or more strings (or .txt files)")
    return out


def snippet(text: str, width: int = 60) -> str:
    """One line of at most ``width`` characters standing for a text in tables."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
