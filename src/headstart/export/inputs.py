"""The input side of an exported model, per modality, without torch: how user items (image
files or bytes; raw strings or .txt files) become the model's input arrays, and how an HTTP
request to ``/predict`` is read (multipart images; JSON texts).

A :class:`ModelInputs` is looked up by the modality name the export metadata stores
(``metadata["modality"]``; absent means :data:`DEFAULT_MODALITY`, as in exports written before
text models existed) with :func:`inputs_for_export`. The torch side of the same signature
(wrapper module, sample inputs, side files) is :mod:`headstart.export.signatures`.

Example::

    inputs = inputs_for_export(metadata, Path("model.onnx"))
    names, items = inputs.load(["a.jpg", "b.png"])           # names shown, decoded items
    for rows, feed in inputs.batches(items):                 # feed: ONNX input name -> array
        probs[rows] = session.run(["probabilities"], feed)[0]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from headstart.errors import HeadstartError
from headstart.files import (
    RESAMPLING,
    collect_images,
    load_model_image,
    open_rgb,
    reading_image,
)
from headstart.text_files import snippet, texts_from_inputs

#: the modality of an export whose metadata names none (image exports never stored one)
DEFAULT_MODALITY = "image"

#: the metadata ``format`` of exports whose graph resized whole images itself (a square
#: bilinear resize without antialiasing: not what evaluation does); their predictors still feed
#: whole decoded images so that they keep working
LEGACY_IMAGE_FORMAT = "headstart-export/1"

#: ``rows, feed`` per batch: the item indices and the model's named input arrays
Batches = Iterator[tuple[list[int], dict[str, np.ndarray]]]


def decode_image(data: str | Path | Any) -> np.ndarray:
    """An image file (path or file-like) as uint8 (H, W, 3) RGB (see :func:`open_rgb`)."""
    return np.asarray(open_rgb(data), dtype=np.uint8)


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on one ``/predict`` request: image uploads (count, bytes each) and texts (count,
    characters each)."""

    max_bytes: int = 10 * 2**20
    max_files: int = 32
    max_texts: int = 64
    max_chars: int = 100_000


class RequestError(Exception):
    """A request the server answers with ``status`` and ``detail`` (never a crash)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ModelInputs(ABC):
    """How one modality's items reach an exported (or run) model."""

    modality: ClassVar[str]
    #: the key naming each item in the server's JSON predictions (None: items are not named)
    name_key: ClassVar[str | None] = None

    @classmethod
    @abstractmethod
    def from_export(cls, metadata: dict[str, Any], model_path: Path) -> ModelInputs:
        """The inputs of the export at ``model_path`` (side files are found beside it)."""

    def collect(self, inputs: Sequence[str | Path]) -> list[Any]:
        """Command-line arguments as :meth:`load` takes them (e.g. folders expanded)."""
        return list(inputs)

    @abstractmethod
    def load(self, inputs: Sequence[Any]) -> tuple[list[str], list[Any]]:
        """``(names, items)``: the name each prediction shows and the decoded items."""

    @abstractmethod
    def batches(self, items: Sequence[Any]) -> Batches:
        """The items as model input batches: ``(rows, {input name: array})``."""

    @abstractmethod
    def max_request_bytes(self, limits: RequestLimits) -> int:
        """No valid request is larger (bodies above it are refused unread)."""

    @abstractmethod
    async def read_request(
        self, request: Any, limits: RequestLimits
    ) -> tuple[list[str], list[Any]]:
        """``(names, items)`` from a ``/predict`` request (a Starlette ``Request``); raises
        :class:`RequestError` for anything not servable."""


class ImageInputs(ModelInputs):
    """Images decoded by :func:`~headstart.files.load_model_image` (the decoder of eager
    ``predict`` and evaluation's geometry): uint8 RGB ``(crop, crop, 3)``, fed as ``images``
    ``(N, crop, crop, 3)``. Without ``resize``/``crop`` (exports in
    :data:`LEGACY_IMAGE_FORMAT`) whole images of any size are fed; images of equal size share
    a batch."""

    modality = "image"
    name_key = "filename"

    def __init__(
        self, resize: int | None = None, crop: int | None = None, interpolation: str = "bilinear"
    ) -> None:
        if (resize is None) != (crop is None):
            raise ValueError("give both resize and crop, or neither (legacy whole images)")
        if interpolation not in RESAMPLING:
            raise HeadstartError(
                f"the model's preprocessing names interpolation {interpolation!r}, which this "
                f"headstart cannot decode with (known: {', '.join(RESAMPLING)}); upgrade headstart"
            )
        self.resize, self.crop, self.interpolation = resize, crop, interpolation

    @classmethod
    def from_export(cls, metadata: dict[str, Any], model_path: Path) -> ImageInputs:
        """The export's own preprocessing sizes (``metadata["preprocessing"]``); whole images
        for a :data:`LEGACY_IMAGE_FORMAT` export."""
        if metadata.get("format") == LEGACY_IMAGE_FORMAT:
            return cls()
        try:
            p = metadata["preprocessing"]
            return cls(int(p["resize"]), int(p["crop"]), str(p.get("interpolation", "bilinear")))
        except (KeyError, TypeError, ValueError):
            raise HeadstartError(
                f"{model_path}: its metadata has no usable 'preprocessing' (resize, crop); "
                "export the run again with this headstart"
            ) from None

    def decode(self, source: str | Path | Any) -> np.ndarray:
        """One image file (path or file-like) as the model's input array."""
        if self.resize is None or self.crop is None:
            return decode_image(source)
        return load_model_image(source, self.resize, self.crop, self.interpolation)

    def collect(self, inputs: Sequence[str | Path]) -> list[Any]:
        return list(collect_images(inputs))

    def load(self, inputs: Sequence[Any]) -> tuple[list[str], list[Any]]:
        arrays = []
        for f in inputs:
            with reading_image(f, "Replace the file or leave it out of the inputs."):
                arrays.append(self.decode(f))
        return [str(f) for f in inputs], arrays

    def batches(self, items: Sequence[Any]) -> Batches:
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(items):
            by_shape.setdefault(im.shape, []).append(i)
        for rows in by_shape.values():
            yield rows, {"images": np.stack([items[i] for i in rows])}

    def max_request_bytes(self, limits: RequestLimits) -> int:
        return limits.max_files * limits.max_bytes + 2**20

    async def read_request(
        self, request: Any, limits: RequestLimits
    ) -> tuple[list[str], list[Any]]:
        import io

        import anyio.to_thread

        try:
            form = await request.form()
        except Exception:
            raise RequestError(400, "malformed multipart body") from None
        try:
            files = form.getlist("files")
            if not files or not all(hasattr(f, "read") for f in files):
                raise RequestError(422, "send one or more images in the multipart field 'files'")
            if len(files) > limits.max_files:
                raise RequestError(413, f"at most {limits.max_files} images per request")
            names, arrays = [], []
            for f in files:
                data = await f.read(limits.max_bytes + 1)
                if len(data) > limits.max_bytes:
                    raise RequestError(413, f"{f.filename}: larger than {limits.max_bytes} bytes")
                if not data:
                    raise RequestError(400, f"{f.filename}: empty upload")
                try:  # in a worker thread: decoding a large photo must not block the loop
                    arrays.append(await anyio.to_thread.run_sync(self.decode, io.BytesIO(data)))
                except Exception:
                    raise RequestError(
                        415, f"{f.filename}: not a readable image (JPEG, PNG, ...)"
                    ) from None
                names.append(f.filename or "")
            return names, arrays
        finally:
            await form.close()


class TextInputs(ModelInputs):
    """Raw strings, tokenised by ``encode`` (texts -> padded ``{input name: int64 (N, L)}``) in
    batches of ``batch_size``. From a prediction's inputs, an existing ``.txt`` file is read;
    from a request, every string is a text."""

    modality = "text"

    def __init__(
        self, encode: Callable[[list[str]], dict[str, np.ndarray]], batch_size: int = 32
    ) -> None:
        self.encode = encode
        self.batch_size = batch_size

    @classmethod
    def from_export(cls, metadata: dict[str, Any], model_path: Path) -> TextInputs:
        """The export's tokenizer file (``metadata["tokenizer"]``, beside the model) with the
        run's truncation and padding; ``tokenizers`` only."""
        names = list(metadata["model_inputs"])
        tok = load_fast_tokenizer(
            model_path.with_name(metadata["tokenizer"]),
            int(metadata["max_length"]),
            int(metadata["pad_id"]),
        )

        def encode(texts: list[str]) -> dict[str, np.ndarray]:
            encs = tok.encode_batch(texts)
            arrays = {
                "input_ids": [e.ids for e in encs],
                "attention_mask": [e.attention_mask for e in encs],
                "token_type_ids": [e.type_ids for e in encs],
            }
            return {n: np.array(arrays[n], dtype=np.int64) for n in names}

        return cls(encode)

    def load(self, inputs: Sequence[Any]) -> tuple[list[str], list[Any]]:
        items = texts_from_inputs(inputs)
        return [name if name != text else snippet(text) for name, text in items], [
            t for _, t in items
        ]

    def batches(self, items: Sequence[Any]) -> Batches:
        for start in range(0, len(items), self.batch_size):
            rows = list(range(start, min(start + self.batch_size, len(items))))
            yield rows, self.encode([items[i] for i in rows])

    def max_request_bytes(self, limits: RequestLimits) -> int:
        # JSON may spell one character as two six-byte \u escapes (a surrogate pair: 12 bytes)
        return limits.max_texts * (limits.max_chars * 12 + 8) + 2**20

    async def read_request(
        self, request: Any, limits: RequestLimits
    ) -> tuple[list[str], list[Any]]:
        usage = 'send JSON {"texts": ["...", ...]} with one or more strings'
        try:
            payload = await request.json()
        except Exception:
            raise RequestError(422, usage) from None
        if not isinstance(payload, dict):
            raise RequestError(422, usage)
        texts = payload.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise RequestError(400, usage)
        if len(texts) > limits.max_texts:
            raise RequestError(413, f"at most {limits.max_texts} texts per request")
        if any(len(t) > limits.max_chars for t in texts):
            raise RequestError(413, f"each text at most {limits.max_chars} characters")
        return list(texts), list(texts)


def load_fast_tokenizer(path: Path, max_length: int, pad_id: int) -> Any:
    """A ``tokenizers`` file with truncation to ``max_length`` and padding with ``pad_id``."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise HeadstartError(f"tokenizer file {path} (saved beside the model by export) is missing")
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length)
    pad_token = tok.id_to_token(pad_id) or "[PAD]"
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tok


#: the input side of each modality, by the name ``Backbone.modality`` and the metadata give
INPUTS: dict[str, type[ModelInputs]] = {c.modality: c for c in (ImageInputs, TextInputs)}


def modality_of(metadata: dict[str, Any]) -> str:
    """The modality an export's metadata names (:data:`DEFAULT_MODALITY` when none)."""
    return str(metadata.get("modality", DEFAULT_MODALITY))


def inputs_for_export(metadata: dict[str, Any], model_path: Path) -> ModelInputs:
    """The :class:`ModelInputs` of the export at ``model_path`` with ``metadata``."""
    modality = modality_of(metadata)
    if modality not in INPUTS:
        raise HeadstartError(
            f"{model_path} takes {modality!r} inputs; this headstart reads {', '.join(INPUTS)}"
        )
    return INPUTS[modality].from_export(metadata, model_path)
