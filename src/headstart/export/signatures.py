"""The export input signature of each modality, torch side: what the exported module computes,
its named sample inputs and dynamic axes, the metadata fields and side files only that modality
has, the model card's modality lines, and how a run folder's model takes the items of
:mod:`headstart.export.inputs` (the torch-free side of the same signature).

Keyed by the modality name ``Backbone.modality`` gives (``"image"``, ``"text"``); the exporter,
the run predictor and the server never ask which one they hold.

========  ===================================  ==============================================
modality  ONNX inputs                          beside the model file
========  ===================================  ==============================================
image     ``images`` uint8 (N, crop, crop, 3)  - (decoded by ``files.load_model_image``)
text      ``input_ids``, ``attention_mask``    ``<name>.tokenizer.json`` (``tokenizers``),
          [, ``token_type_ids``] int64 (N, L)  checked to reproduce the training tokenizer
========  ===================================  ==============================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from headstart.errors import DataError, HeadstartError
from headstart.export.inputs import (
    ImageInputs,
    ModelInputs,
    TextInputs,
    load_fast_tokenizer,
)
from headstart.export.wrapper import ImagesToProbabilities, TokensToProbabilities
from headstart.tasks import task_for

if TYPE_CHECKING:
    from headstart.data.folders import Sample
    from headstart.evaluation.loading import LoadedRun

#: the export check's tolerance on preprocessing: the torch-free decoder's model input vs the
#: evaluation transform's, after normalisation (float rounding only; one uint8 step is ~0.017)
DECODER_TOLERANCE = 1e-5


@dataclass(frozen=True)
class CardLines:
    """The modality's parts of MODEL_CARD.md (see :func:`headstart.export.exporter.write_model_card`)."""

    files: str  # what the file line names
    model: str  # appended to the model line
    input: str  # after the metadata's input description
    unit: str  # what the samples are called ("images", "texts")
    check: str  # what the export check ran on
    use: str  # arguments of the `headstart predict` example
    limits: str  # the last sentence of the limits
    check_note: str = ""  # further export-time checks


class ExportSignature(ABC):
    """One modality's export signature (stateless; one instance each in :data:`SIGNATURES`)."""

    modality: ClassVar[str]
    formats: ClassVar[tuple[str, ...]] = ("onnx", "torchscript")

    def format_error(self, fmt: str) -> str:
        """Why ``fmt`` (not in :attr:`formats`) is refused."""
        return f"unknown export format {fmt!r}; use {' or '.join(self.formats)}"

    @abstractmethod
    def wrapper(self, loaded: LoadedRun) -> nn.Module:
        """The exported module (eval mode): the named inputs -> ``(probabilities, logits)``."""

    @abstractmethod
    def sample_inputs(self, loaded: LoadedRun) -> dict[str, torch.Tensor]:
        """Named realistic inputs for tracing and the export-time check."""

    @abstractmethod
    def dynamic_axes(self, loaded: LoadedRun) -> dict[str, dict[int, str]]:
        """Dynamic axes of each named input (ONNX)."""

    @abstractmethod
    def input_line(self, loaded: LoadedRun) -> str:
        """The metadata's ``input`` description."""

    @abstractmethod
    def metadata_fields(self, loaded: LoadedRun, path: Path | None) -> dict[str, Any]:
        """Metadata only this modality has (``path``: the model file; None for a run folder)."""

    def write_side_files(self, loaded: LoadedRun, path: Path) -> None:  # noqa: B027
        """Write and check the files the export at ``path`` needs beside it (default: none)."""

    @abstractmethod
    def card(self, meta: dict[str, Any], path: Path, fmt: str) -> CardLines:
        """The modality's lines of the model card."""

    @abstractmethod
    def run_inputs(self, loaded: LoadedRun) -> ModelInputs:
        """How a run folder's model (through :meth:`wrapper`) takes prediction items."""


class ImageSignature(ExportSignature):
    modality = "image"

    def wrapper(self, loaded: LoadedRun) -> nn.Module:
        task = task_for(loaded.config).for_run(loaded.run)
        return ImagesToProbabilities(loaded.model, task).eval()

    def sample_inputs(self, loaded: LoadedRun, n: int = 4) -> dict[str, torch.Tensor]:
        """Up to ``n`` of the run's own images (validation, else training), full size from
        their files through the exported predictor's decoder; which must give the evaluation
        transform's model input on them (:func:`check_decoder`). Raises
        :class:`~headstart.errors.DataError` when the run's images cannot be read."""
        samples = run_images(loaded, n)
        inputs = self.run_inputs(loaded)
        assert isinstance(inputs, ImageInputs)
        arrays = []
        for s in samples:
            try:
                arrays.append(inputs.decode(s.path))
            except Exception as err:
                raise DataError(
                    f"export check: cannot read {s.path} of the run's data: {err}. "
                    "Replace the file (or restore the run's data) and export again."
                ) from None
        images = torch.from_numpy(np.stack(arrays))
        check_decoder(loaded, samples, images)
        return {"images": images}

    def dynamic_axes(self, loaded: LoadedRun) -> dict[str, dict[int, str]]:
        return {"images": {0: "batch"}}

    def input_line(self, loaded: LoadedRun) -> str:
        p = loaded.preprocessing
        return (
            f"uint8 RGB images, shape (N, {p.crop}, {p.crop}, 3), decoded by "
            f"headstart.files.load_model_image (shorter side to {p.resize}, {p.interpolation} "
            f"with antialiasing, centre crop {p.crop}); outputs: probabilities and logits, (N, C)"
        )

    def metadata_fields(self, loaded: LoadedRun, path: Path | None) -> dict[str, Any]:
        return {"preprocessing": loaded.preprocessing.to_dict()}

    def card(self, meta: dict[str, Any], path: Path, fmt: str) -> CardLines:
        p = meta["preprocessing"]
        return CardLines(
            files=f"**File**: `{path.name}` ({fmt})",
            model="",
            input="Inside the file: scale to [0, 1], normalise with mean "
            f"{p['mean']} and std {p['std']}\n  ({p['source']}); no resizing (the decoder does it, "
            "as evaluation did).",
            unit="images",
            check="the run's own images, full size through the predictor's decoder",
            check_note=";\n  the decoder gives the evaluation transform's input on them",
            use="image.jpg          # onnxruntime only for .onnx files",
            limits="Images resized some other way than `load_model_image` (as `headstart "
            "predict` and `serve` read them)\n  get other predictions.",
        )

    def run_inputs(self, loaded: LoadedRun) -> ModelInputs:
        p = loaded.preprocessing
        return ImageInputs(p.resize, p.crop, p.interpolation)


def run_images(loaded: LoadedRun, n: int) -> list[Sample]:
    """Up to ``n`` images of the run's data for the export check: validation, else training;
    a :class:`~headstart.errors.DataError` naming the data when there are none (the check
    never falls back to made-up inputs)."""
    from headstart.modalities import splits_for

    where = ", ".join(str(p) for p in (loaded.config.data, loaded.config.val) if p)
    try:
        splits = splits_for(loaded.config)
    except HeadstartError as err:
        raise DataError(
            f"export check: the run's data ({where}) cannot be read: {err}. The check runs the "
            "exported model on the run's own images; restore the data at that path and export "
            "again."
        ) from None
    samples = list(splits.val[:n]) or list(splits.train[:n])
    if not samples:
        raise DataError(
            f"export check: the run's data ({where}) has no images; restore it and export again"
        )
    return samples


def check_decoder(loaded: LoadedRun, samples: list[Sample], images: torch.Tensor) -> None:
    """The exported predictor's decoder (``images``, uint8 from the files of ``samples``) must
    give the model input evaluation computes for those files (the image modality's dataset
    without augmentation), within :data:`DECODER_TOLERANCE`."""
    from headstart.data.scan import labels_of
    from headstart.modalities.image import pixels_to_input

    wrapper = ImagesToProbabilities(loaded.model)
    got = pixels_to_input(images, wrapper.mean, wrapper.std)
    idx = {x: 0 for s in samples for x in labels_of(s)}  # the targets are not used
    dataset = loaded.modality.dataset(loaded.model, samples, idx)
    for i, s in enumerate(samples):
        diff = float((got[i] - dataset[i][0]).abs().max())
        if diff > DECODER_TOLERANCE:
            raise RuntimeError(  # a bug, not a user's mistake (exit code 1)
                f"export check failed: the predictor's decoding of {s.path} differs from "
                f"evaluation's preprocessing by {diff:.2e} (> {DECODER_TOLERANCE}); this is a bug "
                "in headstart, please report it"
            )


_SAMPLE_TEXTS = [
    "Shares rose sharply after the company reported record profits.",
    "The minister promised a vote on the new law before the election.",
    "short",
]


def tokenizer_path(model_path: Path) -> Path:
    """``model.onnx`` -> ``model.tokenizer.json`` (the tokenizer saved beside the model)."""
    return model_path.with_suffix(".tokenizer.json")


class TextSignature(ExportSignature):
    """Token ids in; the fast tokenizer is saved beside the model so that a predictor needs
    only onnxruntime + ``tokenizers``. ONNX only."""

    modality = "text"
    formats = ("onnx",)

    def format_error(self, fmt: str) -> str:
        return f"text models export to onnx only (got --format {fmt})"

    @staticmethod
    def _names(loaded: LoadedRun) -> tuple[str, ...]:
        return tuple(loaded.model.preprocessing.model_inputs)  # type: ignore[attr-defined]

    @staticmethod
    def _sample_texts(loaded: LoadedRun, n: int = 4) -> list[str]:
        from headstart.data.text import sample_text
        from headstart.modalities import splits_for

        try:
            return [sample_text(s) for s in splits_for(loaded.config).val[:n]] + _SAMPLE_TEXTS
        except Exception:  # data moved or gone: the check still runs on fixed sentences
            return list(_SAMPLE_TEXTS)

    def _encode(self, loaded: LoadedRun, texts: list[str]) -> dict[str, torch.Tensor]:
        """The training tokenizer's padded batch for ``texts``."""
        from headstart.data.text import tokenize

        collate = loaded.model.collate_fn
        assert collate is not None
        batch, _ = collate([(e, 0) for e in tokenize(loaded.model.preprocessing, texts)])  # type: ignore[arg-type]
        return {k: batch[k] for k in self._names(loaded)}

    def wrapper(self, loaded: LoadedRun) -> nn.Module:
        return TokensToProbabilities(loaded.model, self._names(loaded)).eval()

    def sample_inputs(self, loaded: LoadedRun) -> dict[str, torch.Tensor]:
        return self._encode(loaded, self._sample_texts(loaded))

    def dynamic_axes(self, loaded: LoadedRun) -> dict[str, dict[int, str]]:
        return {n: {0: "batch", 1: "tokens"} for n in self._names(loaded)}

    def input_line(self, loaded: LoadedRun) -> str:
        pre: Any = loaded.model.preprocessing
        return (
            f"int64 token ids {', '.join(self._names(loaded))} of shape (N, L), "
            f"L <= {pre.max_length}; outputs: probabilities and logits, (N, C)"
        )

    def metadata_fields(self, loaded: LoadedRun, path: Path | None) -> dict[str, Any]:
        pre: Any = loaded.model.preprocessing
        return {
            **({"tokenizer": tokenizer_path(path).name} if path is not None else {}),
            "model_inputs": list(self._names(loaded)),
            "max_length": pre.max_length,
            "pooling": pre.pooling,
            "pad_id": pre.pad_id,
        }

    def write_side_files(self, loaded: LoadedRun, path: Path) -> None:
        """The fast tokenizer (truncation to the run's max_length, no padding), which must give
        the training tokenizer's ids on sample texts."""
        from headstart.data.text import tokenize
        from headstart.models.text_adapter import load_tokenizer

        pre: Any = loaded.model.preprocessing
        backend = getattr(load_tokenizer(pre.tokenizer), "backend_tokenizer", None)
        if backend is None:
            raise HeadstartError(
                f"the tokenizer of {loaded.config.model} has no fast (tokenizers) form to export"
            )
        backend.enable_truncation(max_length=pre.max_length)
        backend.no_padding()
        tok_path = tokenizer_path(path)
        backend.save(str(tok_path))
        texts = self._sample_texts(loaded)
        saved = load_fast_tokenizer(tok_path, pre.max_length, pre.pad_id)
        expected_ids = [e["input_ids"] for e in tokenize(pre, texts)]
        got_ids = [e.ids[: sum(e.attention_mask)] for e in saved.encode_batch(texts)]
        if got_ids != expected_ids:
            raise HeadstartError(
                "export check failed: the saved tokenizer does not reproduce the training tokenizer"
            )

    def card(self, meta: dict[str, Any], path: Path, fmt: str) -> CardLines:
        return CardLines(
            files=f"**Files**: `{path.name}` ({fmt}) and its tokenizer `{meta['tokenizer']}`",
            model=f", {meta['pooling']} pooling",
            input=f"Texts longer than {meta['max_length']} tokens are truncated.",
            unit="texts",
            check="sample texts",
            check_note=";\n  the saved tokenizer reproduces the training tokenizer's ids on them",
            use='"some text" notes.txt      # onnxruntime + tokenizers only',
            limits=f"Only the first {meta['max_length']} tokens of a text are read.",
        )

    def run_inputs(self, loaded: LoadedRun) -> ModelInputs:
        def encode(texts: list[str]) -> dict[str, np.ndarray]:
            return {k: v.numpy() for k, v in self._encode(loaded, texts).items()}

        return TextInputs(encode)


#: the export signature of each modality, by ``Backbone.modality``
SIGNATURES: dict[str, ExportSignature] = {
    s.modality: s for s in (ImageSignature(), TextSignature())
}


def signature_for(modality: str) -> ExportSignature:
    """The export signature of ``modality`` (``Backbone.modality``)."""
    if modality not in SIGNATURES:
        raise HeadstartError(
            f"{modality} models cannot be exported (exportable: {', '.join(SIGNATURES)})"
        )
    return SIGNATURES[modality]
