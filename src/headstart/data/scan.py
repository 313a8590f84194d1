"""The labelled-file record and the folder-walking/skip helpers the image scanner
(:mod:`headstart.data.folders`) and the text scanner (:mod:`headstart.data.text`) share."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from headstart.errors import DataError

log = logging.getLogger(__name__)

HIDDEN_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class Sample:
    """One labelled example: a file and its class name."""

    path: Path
    label: str


@dataclass(frozen=True)
class MultiLabelSample(Sample):
    """One example with a set of labels (multi-label classification): ``labels`` sorted, never
    empty; ``label`` is the CSV cell as written (shown in messages)."""

    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class MultiTaskSample(Sample):
    """One example with one class per task (multi-task classification): ``labels`` holds
    them in task order as ``task:class`` names (:func:`task_class`); ``label`` is the row's
    cells as written (shown in messages)."""

    labels: tuple[str, ...] = ()


#: between a task (label column) and a class in a multi-task run's class names
TASK_SEP = ":"


def task_class(task: str, value: str) -> str:
    """A multi-task class name: ``species:cat``."""
    return f"{task}{TASK_SEP}{value}"


def split_task_class(name: str) -> tuple[str, str]:
    """``(task, class)`` of :func:`task_class`'s name (task names hold no colon)."""
    task, _, value = name.partition(TASK_SEP)
    return task, value


def labels_of(sample: Sample) -> tuple[str, ...]:
    """The labels of a sample: its label set (multi-label), its class per task (multi-task)
    or its one class."""
    if isinstance(sample, MultiLabelSample | MultiTaskSample):
        return sample.labels
    return (sample.label,)


def is_hidden(path: Path) -> bool:
    """Dot files and OS clutter (``__MACOSX``, ``Thumbs.db``, ``desktop.ini``): never data."""
    return path.name.startswith(".") or path.name in HIDDEN_NAMES


def skip_or_fail(skipped: Counter[str], reason: str, where: str, strict: bool) -> None:
    """Count (and log the first 5 of) a skipped entry, or raise a DataError when ``strict``."""
    if strict:
        raise DataError(f"{reason}: {where} (fix it, or drop --strict to skip such entries)")
    if skipped[reason] < 5:
        log.warning("%s: %s (skipped)", reason, where)
    skipped[reason] += 1


def walk_files(folder: Path, skipped: Counter[str]) -> list[Path]:
    """All files below ``folder`` in a stable order, following symlinks once (no loops)."""
    out: list[Path] = []
    seen: set[Path] = set()
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            real = d.resolve()
        except (OSError, RuntimeError):
            skip_or_fail(skipped, "unresolvable symlink", str(d), strict=False)
            continue
        if real in seen:
            skip_or_fail(skipped, "symlink loop", f"{d} -> {real}", strict=False)
            continue
        seen.add(real)
        try:
            entries = sorted(d.iterdir())
        except OSError as err:
            log.warning("cannot list %s: %s (skipped)", d, err)
            skipped["unreadable folder"] += 1
            continue
        for e in entries:
            if is_hidden(e):
                skipped["hidden file"] += 1
            elif e.is_dir():
                stack.append(e)
            elif e.is_file():
                out.append(e)
            else:
                skip_or_fail(skipped, "broken link or special file", str(e), strict=False)
    return sorted(out)
