"""Text data: a CSV with a text and a label column, or class folders of ``.txt`` files.

Accepted layouts (the same split rules as images, see :func:`headstart.data.folders.load_splits`)::

    data/<class>/*.txt                       (split with a seed; e.g. the BBC News corpus)
    data/train/<class>/*.txt  data/val/...   (explicit splits)
    texts.csv with columns text,label        (--text-column / --label-column name others)

A run is a text run when its model is a text model (``text:minilm``, ``text:<folder>``, ``hf:`` of
a folder with a tokenizer) or ``--text-column`` is given. Each item becomes a
:class:`TextSample` (a :class:`~headstart.data.scan.Sample` that also carries its text), so
splits, class maps, the feature cache and the run folder work unchanged. :class:`TextDataset`
tokenises once (truncating to the backbone's ``max_length``); batches are padded per batch by the
backbone's ``collate_fn`` (dynamic padding).
"""

from __future__ import annotations

import csv
import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from headstart.data.scan import Sample, is_hidden, skip_or_fail, walk_files
from headstart.errors import DataError
from headstart.text_files import TEXT_EXTENSIONS, read_text_file

if TYPE_CHECKING:
    from headstart.config import TrainConfig
    from headstart.models.backbone import Backbone
    from headstart.models.text_adapter import TextPreprocessing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextSample(Sample):
    """One labelled text: ``path`` is its .txt file or the CSV it came from (``row``: line)."""

    text: str = ""
    row: int = 0


def _column(fields: list[str], wanted: str, path: Path, option: str) -> str:
    for f in fields:
        if f.strip().lower() == wanted.strip().lower():
            return f
    raise DataError(
        f"{path}: no column {wanted!r} (columns: {', '.join(fields) or 'none'}); name the right "
        f"one with {option}"
    )


def read_text_csv(
    path: Path,
    skipped: Counter[str],
    strict: bool = False,
    *,
    text_column: str = "text",
    label_column: str = "label",
) -> list[TextSample]:
    """Samples from a CSV's ``text_column`` and ``label_column`` (other columns ignored)."""
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    samples: list[TextSample] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        tcol = _column(fields, text_column, path, "--text-column")
        lcol = _column(fields, label_column, path, "--label-column")
        for row in reader:
            line = reader.line_num
            text, label = (row.get(tcol) or "").strip(), (row.get(lcol) or "").strip()
            if not text or not label:
                skip_or_fail(
                    skipped, "CSV row with an empty text or label", f"{path}:{line}", strict
                )
                continue
            samples.append(TextSample(path, label, text, line))
    if not samples:
        raise DataError(f"{path} lists no usable texts (columns {text_column!r}, {label_column!r})")
    return samples


def scan_text_folders(root: Path, skipped: Counter[str]) -> list[TextSample]:
    """Samples of ``root/<class>/**/*.txt``; other files are counted as skips."""
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (pass a folder of class folders or a .csv file)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p))
    if not class_dirs:
        raise DataError(
            f"{root} has no class folders; expected {root}/<class>/<.txt files> or a CSV with "
            "text and label columns (see docs/text.md)"
        )
    samples: list[TextSample] = []
    empty: list[str] = []
    for d in class_dirs:
        files = walk_files(d, skipped)
        texts = [f for f in files if f.suffix.lower() in TEXT_EXTENSIONS]
        if len(files) > len(texts):
            skipped["non-text file"] += len(files) - len(texts)
        kept = 0
        for f in texts:
            text = read_text_file(f).strip()
            if not text:
                skipped["empty text file"] += 1
                continue
            samples.append(TextSample(f, d.name, text))
            kept += 1
        if not kept:
            empty.append(d.name)
    if empty:
        raise DataError(
            f"class folder(s) with no .txt files in {root}: {', '.join(empty)}. "
            "Add texts or remove the folder(s)."
        )
    return samples


def text_reader(
    text_column: str = "text", label_column: str = "label"
) -> Callable[[str | Path, Counter[str], bool], list[Sample]]:
    """A source reader for :func:`~headstart.data.folders.load_splits`: CSV or .txt folders."""

    def read(source: str | Path, skipped: Counter[str], strict: bool = False) -> list[Sample]:
        p = Path(source)
        if p.suffix.lower() == ".csv":
            rows: list[Sample] = list(
                read_text_csv(
                    p, skipped, strict, text_column=text_column, label_column=label_column
                )
            )
            return rows
        return list(scan_text_folders(p, skipped))

    return read


def is_text_task(config: TrainConfig) -> bool:
    """Whether ``config`` describes a text run (a text model; ``--text-column`` needs one)."""
    from headstart.models.text_adapter import is_text_spec

    text_model = is_text_spec(config.model)
    if config.text_column is not None and not text_model:
        raise DataError(
            f"--text-column {config.text_column} needs a text model (--model text:minilm, "
            f"text:<folder>, or hf:<folder with a tokenizer>); {config.model} is not one"
        )
    return text_model


def check_text_config(config: TrainConfig) -> None:
    """Reject image-only settings for a text run, naming the option."""
    bad = []
    if config.image_size is not None:
        bad.append("--image-size")
    if config.mixup or config.cutmix:
        bad.append("--mixup/--cutmix")
    if config.feature_views > 1:
        bad.append("--feature-views")
    if bad:
        raise DataError(
            f"{', '.join(bad)} only apply to images; drop them for the text model {config.model}"
        )


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from headstart.models.text_adapter import load_tokenizer

    return load_tokenizer(path)


def tokenize(pre: TextPreprocessing, texts: Sequence[str]) -> list[dict[str, list[int]]]:
    """Token ids (and masks) for ``texts``, truncated to ``pre.max_length``; not padded."""
    if not texts:
        return []
    enc = _tokenizer(pre.tokenizer)(
        list(texts), truncation=True, max_length=pre.max_length, padding=False
    )
    return [{k: list(enc[k][i]) for k in pre.model_inputs if k in enc} for i in range(len(texts))]


class TextDataset(Dataset[tuple[dict[str, list[int]], int]]):
    """``(token ids dict, class index)`` per sample, tokenised once on construction. Accepts the
    ``(index, epoch)`` keys of :class:`~headstart.data.samplers.EpochShuffleSampler`."""

    def __init__(
        self,
        samples: Sequence[Sample],
        class_to_idx: dict[str, int],
        preprocessing: TextPreprocessing,
    ) -> None:
        self.samples = list(samples)
        self.targets = [class_to_idx[s.label] for s in self.samples]
        self.encodings = tokenize(preprocessing, [sample_text(s) for s in self.samples])
        missing = [
            k for k in preprocessing.model_inputs if self.encodings and k not in self.encodings[0]
        ]
        if missing:
            raise DataError(f"the tokenizer {preprocessing.tokenizer} gives no {missing}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[dict[str, list[int]], int]:
        i = key if isinstance(key, int) else key[0]
        return self.encodings[i], self.targets[i]


def sample_text(sample: Sample) -> str:
    """The text of a sample (a :class:`TextSample`, or a .txt file's content)."""
    if isinstance(sample, TextSample):
        return sample.text
    return read_text_file(sample.path)


def eval_dataset(
    backbone: Backbone, samples: Sequence[Sample], class_to_idx: dict[str, int], seed: int = 0
) -> Dataset[Any]:
    """The un-augmented dataset a backbone evaluates ``samples`` with, whatever the modality."""
    if backbone.modality == "text":
        return TextDataset(samples, class_to_idx, backbone.preprocessing)  # type: ignore[arg-type]
    from headstart.data.datasets import ImageDataset
    from headstart.data.transforms import build_eval_transform

    pre = backbone.preprocessing
    return ImageDataset(
        list(samples), class_to_idx, build_eval_transform(pre), pre.resize, seed=seed
    )


def describe_input(backbone: Backbone) -> str:
    """``224px`` for images, ``<= 256 tokens, mean pooling`` for text (for log lines)."""
    pre: Any = backbone.preprocessing
    if backbone.modality == "text":
        return f"<= {pre.max_length} tokens, {pre.pooling} pooling"
    return f"{pre.crop}px"
