"""Scan an ImageFolder tree or a CSV into validated train/val/test splits.

Accepted layouts::

    data/train/<class>/*.jpg  data/val/<class>/*  [data/test/<class>/*]   (explicit splits)
    data/<class>/*.jpg                                                      (split with a seed)
    labels.csv with columns path,label (paths relative to the CSV's folder)
    labels.csv with columns path,labels: multi-label, e.g. ``img.png,cat|dog`` (docs/multilabel.md)
    labels.csv with path and --label-columns a,b: multi-task, one class per column (docs/multitask.md)

Every problem a user can cause ends in a :class:`~headstart.errors.DataError` naming the file or
folder and what to do, or in a counted, logged skip (non-image files, unreadable images unless
``strict``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image

from headstart.data.scan import (
    MultiLabelSample,
    MultiTaskSample,
    Sample,
    is_hidden,
    labels_of,
    skip_or_fail,
    split_task_class,
    task_class,
    walk_files,
)
from headstart.data.splits import stratified_split
from headstart.errors import DataError
from headstart.files import is_image_file

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Validated splits and the class map (sorted class names -> index)."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    #: every sample is a :class:`MultiLabelSample` (a set of labels each)
    multi_label: bool = False
    #: multi-task: the tasks (label columns) in order; every sample is a
    #: :class:`MultiTaskSample` and ``classes`` are ``task:class`` names grouped by task
    tasks: list[str] = field(default_factory=list)

    @property
    def single_label(self) -> bool:
        """One class per example (neither multi-label nor multi-task)."""
        return not self.multi_label and not self.tasks

    def task_rows(self, split: str) -> list[list[int]]:
        """Multi-task: per example, the class index (into ``classes``) of each task."""
        idx = self.class_to_idx
        return [[idx[label] for label in labels_of(s)] for s in getattr(self, split)]

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def targets(self, split: str) -> list[int]:
        """Class indices of a split (single-label; see :meth:`label_matrix` for multi-label,
        :meth:`task_rows` for multi-task)."""
        if not self.single_label:
            raise DataError("this data has several labels per example, not one class")
        idx = self.class_to_idx
        return [idx[s.label] for s in getattr(self, split)]

    def label_matrix(self, split: str) -> list[list[float]]:
        """Multi-hot rows of a split (1.0 where the example has the class)."""
        idx = self.class_to_idx
        rows = []
        for s in getattr(self, split):
            row = [0.0] * len(self.classes)
            for label in labels_of(s):
                row[idx[label]] = 1.0
            rows.append(row)
        return rows

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, images per class (every class listed, zeros included; multi-label:
        images holding each label)."""
        out: dict[str, dict[str, int]] = {}
        for split in ("train", "val", "test"):
            c = Counter(label for s in getattr(self, split) for label in labels_of(s))
            if getattr(self, split):
                out[split] = {k: c.get(k, 0) for k in self.classes}
        return out


def scan_class_folders(root: Path, skipped: Counter[str]) -> list[Sample]:
    """Samples of ``root/<class>/**/<image>``; non-image and hidden files are counted as skips."""
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (pass an image folder or a .csv file)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p))
    if not class_dirs:
        raise DataError(
            f"{root} has no class folders; expected {root}/<class>/<image files> "
            f"or {root}/train/<class>/... (see docs/data.md)"
        )
    samples: list[Sample] = []
    empty: list[str] = []
    for d in class_dirs:
        files = walk_files(d, skipped)
        images = [f for f in files if is_image_file(f)]
        if len(files) > len(images):
            skipped["non-image file"] += len(files) - len(images)
        if not images:
            empty.append(d.name)
        samples.extend(Sample(f, d.name) for f in images)
    if empty:
        raise DataError(
            f"class folder(s) with no images in {root}: {', '.join(empty)}. "
            "Add images or remove the folder(s)."
        )
    return samples


def read_csv(
    path: Path,
    skipped: Counter[str],
    strict: bool = False,
    *,
    task: str = "auto",
    label_sep: str = "|",
    label_columns: Sequence[str] = (),
) -> list[Sample]:
    """Samples from a CSV with ``path`` and ``label`` columns (others ignored; BOM tolerated).

    Multi-task (2+ ``label_columns``): :class:`MultiTaskSample` s, see :func:`read_task_csv`.

    Multi-label (``task="multi-label"``, or ``"auto"`` when the CSV has a ``labels`` column or
    a label cell holds ``label_sep``): :class:`MultiLabelSample` s, each cell split on
    ``label_sep``; a cell with no label counts as a bad row, named by its line."""
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    if len(label_columns) > 1 or task == "multi-task":
        return read_task_csv(path, skipped, strict, label_columns)
    try:
        samples, labels_column = _read_csv_rows(path, skipped, strict)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); re-save it as UTF-8 "
            "(e.g. 'CSV UTF-8' in a spreadsheet program)"
        ) from None
    except csv.Error as err:  # an unterminated quote, a field over the size limit ...
        raise DataError(
            f"{path} is not a readable CSV ({err}); re-save it as a plain UTF-8 CSV"
        ) from None
    multi = task == "multi-label" or (
        task == "auto" and (labels_column or any(label_sep in s.label for s, _ in samples))
    )
    if not multi:
        return [s for s, _ in samples]
    out: list[Sample] = []
    for s, where in samples:
        labels = tuple(sorted({x.strip() for x in s.label.split(label_sep)} - {""}))
        if not labels:
            skip_or_fail(skipped, "CSV row with no label", f"{where} ({s.label!r})", strict)
            continue
        out.append(MultiLabelSample(s.path, s.label, labels))
    if not out:
        raise DataError(f"{path} lists no usable images")
    return out


def read_task_csv(
    path: Path, skipped: Counter[str], strict: bool, columns: Sequence[str]
) -> list[Sample]:
    """Multi-task samples from a CSV with a ``path`` column and one column per task
    (``columns``, matched case-insensitively). A missing column is an error naming it; a row
    with an empty cell or a missing image is a bad row named by its line and column (skipped
    and counted, or an error with ``strict``)."""
    wanted = [c.strip().lower() for c in columns]
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            absent = [c for c in ["path", *wanted] if c not in fields]
            if absent:
                raise DataError(
                    f"{path}: the header has no {', '.join(repr(c) for c in absent)} column "
                    f"(found: {', '.join(fields) or 'none'}); multi-task CSVs need 'path' and "
                    "each --label-columns column"
                )
            out: list[Sample] = []
            for line_no, raw in enumerate(reader, start=2):
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
                where = f"{path}:{line_no}"
                empty = [c for c in wanted if not row.get(c)]
                if not row.get("path") or empty:
                    what = f"column {', '.join(empty)}" if empty else "column path"
                    skip_or_fail(skipped, "CSV row with an empty cell", f"{where} ({what})", strict)
                    continue
                file = Path(row["path"])
                file = file if file.is_absolute() else path.parent / file
                if not file.is_file():
                    skip_or_fail(skipped, "CSV path not found", f"{where} ({file})", strict)
                    continue
                cells = ", ".join(f"{c}={row[c]}" for c in wanted)
                labels = tuple(task_class(c, row[c]) for c in wanted)
                out.append(MultiTaskSample(file, f"{cells} (line {line_no})", labels))
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err.reason}); re-save it as UTF-8") from None
    except csv.Error as err:
        raise DataError(f"{path} is not a readable CSV ({err}); re-save it as plain CSV") from None
    if not out:
        raise DataError(f"{path} lists no usable images")
    return out


def task_classes(tasks: Sequence[str], labels: Iterable[str]) -> list[str]:
    """Multi-task class names grouped by task in ``tasks`` order, sorted within a task."""
    by_task: dict[str, set[str]] = {t: set() for t in tasks}
    for name in labels:
        by_task[split_task_class(name)[0]].add(name)
    return [c for t in tasks for c in sorted(by_task[t])]


def check_task_classes(tasks: Sequence[str], classes: Sequence[str], data: str | Path) -> None:
    """Every task needs two classes in the training data."""
    for t in tasks:
        seen = [split_task_class(c)[1] for c in classes if split_task_class(c)[0] == t]
        if len(seen) < 2:
            raise DataError(
                f"label column {t!r} of {data} has only one class in the training data "
                f"({', '.join(map(repr, seen)) or 'none'}): a task needs at least two. Drop it "
                "from --label-columns or add examples of other classes."
            )


def _read_csv_rows(
    path: Path, skipped: Counter[str], strict: bool
) -> tuple[list[tuple[Sample, str]], bool]:
    """``([(sample, "file:line"), ...], whether the labels come from a 'labels' column)``."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        column = "label" if "label" in fields else "labels"
        if "path" not in fields or column not in fields:
            raise DataError(
                f"{path}: the header must name a 'path' and a 'label' (or, multi-label, "
                f"'labels') column (found: {fields or 'none'})"
            )
        samples: list[tuple[Sample, str]] = []
        for line_no, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            p, label = row.get("path", ""), row.get(column, "")
            where = f"{path}:{line_no}"
            if not p or not label:
                skip_or_fail(skipped, "CSV row missing path or label", where, strict)
                continue
            file = Path(p) if Path(p).is_absolute() else (path.parent / p)
            if not file.is_file():
                skip_or_fail(skipped, "CSV path not found", f"{where} ({file})", strict)
                continue
            samples.append((Sample(file, label), where))
    if not samples:
        raise DataError(f"{path} lists no usable images")
    return samples, column == "labels"


def load_source(
    source: str | Path,
    skipped: Counter[str],
    strict: bool = False,
    *,
    task: str = "auto",
    label_sep: str = "|",
    label_columns: Sequence[str] = (),
) -> list[Sample]:
    """Samples from a folder of class folders or a CSV file (multi-label, multi-task: CSV
    only)."""
    p = Path(source)
    if p.suffix.lower() == ".csv":
        return read_csv(
            p, skipped, strict, task=task, label_sep=label_sep, label_columns=label_columns
        )
    if len(label_columns) > 1 or task == "multi-task":
        raise DataError(
            f"{p}: multi-task data comes as a CSV with a 'path' column and one column per "
            "--label-columns entry, not a folder (see docs/multitask.md)"
        )
    if task == "multi-label":
        raise DataError(
            f"{p}: multi-label data comes as a CSV with 'path,labels' columns, not a folder "
            "(see docs/multilabel.md)"
        )
    return scan_class_folders(p, skipped)


_SMALL = 256 * 1024  # files up to this size are decoded in full by the scan
_EDGE = 64 * 1024  # bytes read at each end of larger files


def _check_readable(
    samples: Sequence[Sample],
    skipped: Counter[str],
    strict: bool,
    digests: dict[Path, str] | None = None,
) -> list[Sample]:
    """Drop files PIL cannot read: zero-byte, truncated or corrupt files, non-images, and
    images over PIL's decompression-bomb limit, at a fraction of a decode's cost:

    * files up to 256 KiB: decoded (JPEG at 1/8 scale);
    * larger PNGs: ``verify()`` (every chunk's CRC);
    * larger JPEGs: the last 64 KiB must hold the end-of-image marker (``FF D9`` never occurs in
      entropy-coded data, so a JPEG cut anywhere in its image data lacks it; ``verify()`` does
      not read JPEG data at all). Only when it is missing is the file decoded, to confirm.
      Damage *inside* JPEG image data is mostly concealed by libjpeg (wrong pixels, no error,
      as with a full decode); a decode that does fail in training names the file;
    * other formats: decoded.

    ``digests`` receives a content key per file (size + first and last 64 KiB) that finds
    byte-identical copies across splits without reading whole files."""

    def ok(s: Sample) -> str | None:
        try:
            size = s.path.stat().st_size
            with s.path.open("rb") as fh:
                head = fh.read(_SMALL if size <= _SMALL else _EDGE)
                if size > _SMALL:
                    fh.seek(-_EDGE, os.SEEK_END)
                tail = fh.read() if size > _SMALL else head[-_EDGE:]
            if digests is not None:
                key = hashlib.blake2b(str(size).encode() + head + tail, digest_size=16)
                digests[s.path] = key.hexdigest()
            with Image.open(io.BytesIO(head) if size <= _SMALL else s.path) as im:
                if size <= _SMALL or im.format not in ("PNG", "JPEG"):
                    if im.format == "JPEG":
                        im.draft("RGB", (64, 64))
                    im.load()
                elif im.format == "PNG":
                    im.verify()
                elif b"\xff\xd9" not in tail:  # JPEG without its end marker: confirm by decoding
                    im.draft("RGB", (64, 64))
                    im.load()
            return None
        except Image.DecompressionBombError as err:
            return f"{err} Downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it"
        except Exception as err:  # PIL raises many types for bad files
            return f"{type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = list(pool.map(ok, samples))
    kept = []
    for s, problem in zip(samples, problems, strict=True):
        if problem is None:
            kept.append(s)
        else:
            skip_or_fail(skipped, "unreadable image", f"{s.path} ({problem})", strict)
    return kept


def load_splits(
    data: str | Path,
    val: str | Path | None = None,
    test: str | Path | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 42,
    strict: bool = False,
    reader: Callable[[str | Path, Counter[str], bool], list[Sample]] | None = None,
    task: str = "auto",
    label_sep: str = "|",
    label_columns: Sequence[str] = (),
) -> DataSplits:
    """Resolve the layout, validate it, and return splits with a sorted class map.

    Example::

        splits = load_splits("data/")        # data/<class>/* split 80/20, or data/train + data/val
        print(splits.classes, splits.counts())

    ``reader`` reads one source (folder or CSV) instead of the image reader, and is trusted to
    validate its items (text data: :func:`headstart.data.text.text_reader`). ``task`` and
    ``label_sep``: single- or multi-label CSVs (see :func:`read_csv`); ``label_columns``
    (2+): a multi-task CSV (:func:`read_task_csv`).
    """
    skipped: Counter[str] = Counter()
    read_source = reader or partial(
        load_source, task=task, label_sep=label_sep, label_columns=label_columns
    )
    digests: dict[Path, str] = {}
    checked = (
        partial(_check_readable, digests=digests)
        if reader is None
        else (lambda samples, _skipped, _strict: samples)
    )
    train, val_samples, test_samples = _read_layout(
        Path(data), val, test, lambda src: read_source(src, skipped, strict)
    )
    multi = any(isinstance(s, MultiLabelSample) for s in train)
    if multi:
        val_samples = _as_multi(val_samples) if val_samples is not None else None
        test_samples = _as_multi(test_samples)
    listed = {label for s in train for label in labels_of(s)}
    unreadable_before = skipped["unreadable image"]
    train = checked(train, skipped, strict)
    classes = sorted({label for s in train for label in labels_of(s)})
    tasks = [c.strip().lower() for c in label_columns] if train and all(
        isinstance(s, MultiTaskSample) for s in train
    ) else []  # fmt: skip
    if tasks:
        classes = task_classes(tasks, classes)
    lost = sorted(listed - set(classes))
    if lost:
        raise DataError(
            f"class(es) {', '.join(lost)} in {data} have no readable image "
            f"({skipped['unreadable image'] - unreadable_before} unreadable file(s) skipped, "
            "see the warnings above). Replace the files or remove the class."
        )
    if tasks:
        check_task_classes(tasks, classes, data)
    if len(classes) < 2:
        raise DataError(
            f"{data} has only one class ({classes[0] if classes else 'none'}); "
            "classification needs at least two class folders/labels"
        )
    if val_samples is None:
        split = _split_multi if multi or tasks else _split
        train, val_samples = split(train, val_fraction, seed, data)
    else:
        val_samples = checked(val_samples, skipped, strict)
    test_samples = checked(test_samples, skipped, strict) if test_samples else []

    _check_eval_classes(classes, val_samples, test_samples)
    _warn_leakage(train, val_samples, test_samples, digests)
    if skipped:
        log.warning(
            "skipped: %s", ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        )
    return DataSplits(train, val_samples, test_samples, classes, skipped, multi, tasks)


def _as_multi(samples: list[Sample]) -> list[Sample]:
    """Samples of a split read as single-label (no cell held the separator) as label sets of
    one, beside a multi-label training split."""
    return [s if isinstance(s, MultiLabelSample) else MultiLabelSample(s.path, s.label, (s.label,))
            for s in samples]  # fmt: skip


def _read_layout(
    root: Path,
    val: str | Path | None,
    test: str | Path | None,
    read: Callable[[str | Path], list[Sample]],
) -> tuple[list[Sample], list[Sample] | None, list[Sample]]:
    """``(train, val or None when it must be split off, test)`` of ``root``: explicit
    ``train/`` + ``val|valid|validation/`` [+ ``test/``] folders, or one source to split;
    ``val``/``test`` given separately take precedence."""
    if root.is_dir() and (root / "train").is_dir():
        val_dir = next(
            (root / n for n in ("val", "valid", "validation") if (root / n).is_dir()), None
        )
        val_src = val or val_dir
        test_src = test or ((root / "test") if (root / "test").is_dir() else None)
        train = read(root / "train")
        return train, read(val_src) if val_src else None, read(test_src) if test_src else []
    train = read(root)
    return train, read(val) if val else None, read(test) if test else []


def _check_eval_classes(classes: list[str], val: list[Sample], test: list[Sample]) -> None:
    """Validation/test classes must be training classes; a class without validation samples
    is warned about (its recall/F1/AUROC are undefined)."""
    for name, split in (("validation", val), ("test", test)):
        extra = sorted({label for s in split for label in labels_of(s)} - set(classes))
        if extra:
            first = next(s for s in split if extra[0] in labels_of(s))
            raise DataError(
                f"{name} data has class(es) not present in training data: {', '.join(extra)} "
                f"(e.g. {first.path}: {first.label!r}). Training classes: {', '.join(classes)}. "
                "Rename or remove those folders/labels, or move such examples into training."
            )
    missing = sorted(set(classes) - {label for s in val for label in labels_of(s)})
    if missing:
        log.warning(
            "validation data has no images of class(es) %s: their recall/F1/AUROC are undefined. "
            "Add validation images of them (or a larger --val-fraction).",
            ", ".join(missing),
        )


def _split(
    samples: list[Sample], val_fraction: float, seed: int, data: str | Path
) -> tuple[list[Sample], list[Sample]]:
    labels = [s.label for s in samples]
    too_small = sorted(k for k, n in Counter(labels).items() if n < 2)
    if too_small:
        raise DataError(
            f"class(es) {', '.join(too_small)} in {data} have fewer than 2 images: "
            "cannot split off validation data. Add images or pass --val."
        )
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def _split_multi(
    samples: list[Sample], val_fraction: float, seed: int, data: str | Path
) -> tuple[list[Sample], list[Sample]]:
    """The multi-label split: stratified on each example's rarest label (ties: the first by
    name), so rare labels reach validation whenever they have two or more examples."""
    freq = Counter(label for s in samples for label in labels_of(s))
    keys = [min(labels_of(s), key=lambda x: (freq[x], x)) for s in samples]
    if len(samples) < 2:
        raise DataError(f"{data} has fewer than 2 images: cannot split off validation data")
    train_idx, val_idx = stratified_split(keys, val_fraction, seed)
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def _warn_leakage(
    train: Iterable[Sample],
    val: Iterable[Sample],
    test: Iterable[Sample] = (),
    digests: dict[Path, str] | None = None,
) -> None:
    """Warn when validation/test items are training items: the same file (also through a
    symlink) or, for images, a byte-identical copy (same content digest)."""

    def identity(s: Sample) -> tuple[Path, int]:  # CSV rows of text data share their path
        return s.path.resolve(), int(getattr(s, "row", 0))

    digests = digests or {}
    train_ids = {identity(s): s.path for s in train}
    train_digests = {digests[p]: p for p in train_ids.values() if p in digests}
    for name, split in (("validation", val), ("test", test)):
        dup: list[tuple[Path, Path]] = []
        for s in split:
            same = train_ids.get(identity(s)) or train_digests.get(digests.get(s.path, ""))
            if same is not None:
                dup.append((s.path, same))
        if dup:
            log.warning(
                "%d %s file(s) are also in the training data (leakage: %s scores will be "
                "optimistic), e.g. %s. Remove the duplicates from one of the splits.",
                len(dup), name, name, "; ".join(f"{a} = {b}" for a, b in dup[:3]),
            )  # fmt: skip
