"""Export and serve text models: ONNX over token ids, the tokenizer saved beside it, and a
predictor that takes raw strings with onnxruntime + ``tokenizers`` only (no torch, no
transformers).

``headstart export runs/x`` on a text run writes::

    model.onnx              inputs input_ids, attention_mask[, token_type_ids] (int64, N x L),
                            outputs probabilities and logits (N x C); labels + metadata inside
    model.tokenizer.json    the fast tokenizer (``tokenizers`` format), truncation to the run's
                            max_length and padding set
    MODEL_CARD.md

At export time the saved tokenizer must give the training tokenizer's ids on sample texts, and
the ONNX outputs must equal the eager model's within 1e-4.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.errors import HeadstartError
from headstart.files import Prediction
from headstart.text_files import snippet, texts_from_inputs

if TYPE_CHECKING:
    from headstart.export.exporter import ExportResult
    from headstart.inference import LoadedRun

log = logging.getLogger(__name__)

_SAMPLE_TEXTS = [
    "Shares rose sharply after the company reported record profits.",
    "The minister promised a vote on the new law before the election.",
    "short",
]


def tokenizer_path(model_path: Path) -> Path:
    """``model.onnx`` -> ``model.tokenizer.json`` (the tokenizer saved beside the model)."""
    return model_path.with_suffix(".tokenizer.json")


def _sample_texts(loaded: LoadedRun, n: int = 4) -> list[str]:
    from headstart.data.folders import splits_for
    from headstart.data.text import sample_text

    try:
        return [sample_text(s) for s in splits_for(loaded.config).val[:n]] + _SAMPLE_TEXTS
    except Exception:  # data moved or gone: the check still runs on fixed sentences
        return list(_SAMPLE_TEXTS)


def _text_wrapper(loaded: LoadedRun) -> Any:
    import torch
    from torch import nn

    names = tuple(loaded.model.preprocessing.model_inputs)  # type: ignore[attr-defined]

    class TokensToProbabilities(nn.Module):
        """Token ids (+ masks) -> ``(probabilities, logits)``."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.model(dict(zip(names, tensors, strict=True)))
            return logits.softmax(dim=1), logits

    return TokensToProbabilities(loaded.model).eval(), names


def _metadata(loaded: LoadedRun, tokenizer_file: str, names: Sequence[str]) -> dict[str, Any]:
    from headstart import __version__

    pre: Any = loaded.model.preprocessing
    metrics = loaded.run.load_metrics()
    return {
        "format": "headstart-export/1",
        "modality": "text",
        "input": f"int64 token ids {', '.join(names)} of shape (N, L), L <= {pre.max_length}; "
        "outputs: probabilities and logits, (N, C)",
        "labels": loaded.classes,
        "model": loaded.config.model,
        "weights": metrics.get("run", {}).get("weights", loaded.config.weights),
        "strategy": metrics.get("run", {}).get("strategy", loaded.config.strategy),
        "tokenizer": tokenizer_file,
        "model_inputs": list(names),
        "max_length": pre.max_length,
        "pooling": pre.pooling,
        "pad_id": pre.pad_id,
        "metrics": {k: metrics[k]["accuracy"] for k in ("val", "test") if k in metrics},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "headstart_version": __version__,
    }


def _save_tokenizer(loaded: LoadedRun, path: Path) -> None:
    from headstart.models.text_adapter import load_tokenizer

    pre: Any = loaded.model.preprocessing
    tok = load_tokenizer(pre.tokenizer)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise HeadstartError(
            f"the tokenizer of {loaded.config.model} has no fast (tokenizers) form to export"
        )
    backend.enable_truncation(max_length=pre.max_length)
    backend.no_padding()
    backend.save(str(path))


def export_text(
    loaded: LoadedRun, fmt: str = "onnx", out: str | Path | None = None
) -> ExportResult:
    """Export a text run as ONNX + ``<name>.tokenizer.json`` + MODEL_CARD.md (see module doc)."""
    import torch

    from headstart.data.text import tokenize
    from headstart.export.exporter import ExportResult, place_checked

    if fmt != "onnx":
        raise HeadstartError(f"text models export to onnx only (got --format {fmt})")
    path = Path(out) if out else loaded.run.path / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper, names = _text_wrapper(loaded)
    pre: Any = loaded.model.preprocessing
    texts = _sample_texts(loaded)
    tok_path = tokenizer_path(path)
    _save_tokenizer(loaded, tok_path)
    # the saved tokenizer must reproduce the training tokenizer's ids
    predictor_tok = _load_fast_tokenizer(tok_path, pre.max_length, pre.pad_id)
    expected_ids = [e["input_ids"] for e in tokenize(pre, texts)]
    got_ids = [e.ids[: sum(e.attention_mask)] for e in predictor_tok.encode_batch(texts)]
    if got_ids != expected_ids:
        raise HeadstartError(
            "export check failed: the saved tokenizer does not reproduce the training tokenizer"
        )
    batch, _ = loaded.model.collate_fn([(e, 0) for e in tokenize(pre, texts)])  # type: ignore[misc]
    args = tuple(batch[k] for k in names)
    with torch.inference_mode():
        expected = np.concatenate([t.numpy() for t in wrapper(*args)], axis=1)
    meta = _metadata(loaded, tok_path.name, names)
    tmp = path.with_name(f".{path.name}.tmp")
    got = _export_onnx(wrapper, args, names, tmp, meta)
    diff = place_checked(got, expected, tmp, path, "onnx")
    meta["export_check_max_abs_diff"] = diff
    card = _write_model_card(loaded, path, meta)
    log.info("exported %s + %s (max |export - eager| = %.2e)", path, tok_path.name, diff)
    return ExportResult(path, card, diff, meta)


def _export_onnx(
    wrapper: Any, args: tuple[Any, ...], names: Sequence[str], path: Path, meta: dict[str, Any]
) -> np.ndarray:
    from headstart.export.exporter import onnx_export

    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    return onnx_export(wrapper, dict(zip(names, args, strict=True)), axes, path, meta)


def _write_model_card(loaded: LoadedRun, path: Path, meta: dict[str, Any]) -> Path:
    m = loaded.run.load_metrics()
    val = m.get("val", {})
    rows = "\n".join(
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for c, v in val.get("per_class", {}).items()
    )
    card = f"""# Model card: {loaded.run.path.name}

- **Files**: `{path.name}` (onnx) and its tokenizer `{meta["tokenizer"]}`; exported {meta["date"]} with headstart {meta["headstart_version"]}
- **Model**: `{meta["model"]}`, weights `{meta["weights"]}`, strategy `{meta["strategy"]}`, {meta["pooling"]} pooling
- **Input**: {meta["input"]}. Texts longer than {meta["max_length"]} tokens are truncated.
- **Labels** (output index order): {", ".join(meta["labels"])}
- **Validation**: accuracy {100 * val.get("accuracy", float("nan")):.2f} % on {val.get("samples", "?")} texts;
  macro F1 {val.get("macro_f1", float("nan")):.3f}
- **Export check**: max |export − eager| = {meta["export_check_max_abs_diff"]:.1e} on sample texts (tolerance 1e-4);
  the saved tokenizer reproduces the training tokenizer's ids on them

| class | precision | recall | f1 | support |
|---|---|---|---|---|
{rows}

## Use

```
headstart predict {path.name} "some text" notes.txt      # onnxruntime + tokenizers only
```

## Limits

Trained on the run's data only ({m.get("run", {}).get("train_images", "?")} training texts); performance on other
data is unknown. Only the first {meta["max_length"]} tokens of a text are read.
"""
    card_path = path.with_name("MODEL_CARD.md")
    card_path.write_text(card, encoding="utf-8")
    return card_path


# --- runtime: raw strings -> probabilities, no torch ------------------------------------------
def _load_fast_tokenizer(path: Path, max_length: int, pad_id: int) -> Any:
    from tokenizers import Tokenizer

    if not path.is_file():
        raise HeadstartError(f"tokenizer file {path} (saved beside the model by export) is missing")
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length)
    pad_token = tok.id_to_token(pad_id) or "[PAD]"
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tok


class TextPredictor:
    """An ONNX text export: ``TextPredictor("model.onnx").predict(["some text"], top_k=3)``."""

    takes_text = True

    def __init__(
        self, path: str | Path, session: Any = None, metadata: dict[str, Any] | None = None
    ) -> None:
        if session is None or metadata is None:
            from headstart.export.predictor import ExportedPredictor

            base = ExportedPredictor(path)
            session, metadata = base.session, base.metadata
        self.path = Path(path)
        self.session = session
        self.metadata: dict[str, Any] = metadata
        if self.metadata.get("modality") != "text":
            raise HeadstartError(f"{self.path} is not a text model export")
        self.labels: list[str] = list(self.metadata["labels"])
        self.names: list[str] = list(self.metadata["model_inputs"])
        self.tokenizer = _load_fast_tokenizer(
            self.path.with_name(self.metadata["tokenizer"]),
            int(self.metadata["max_length"]),
            int(self.metadata["pad_id"]),
        )

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encs = self.tokenizer.encode_batch(list(texts))
        arrays = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        return {n: arrays[n] for n in self.names}

    def probabilities(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``(N, C)`` probabilities for raw strings."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            out[start : start + len(chunk)] = self.session.run(
                ["probabilities"], self.encode(chunk)
            )[0]
        return out

    def predict(self, inputs: Sequence[str | Path], top_k: int = 1) -> list[Prediction]:
        """Label and probability per input: a raw string, or an existing ``.txt`` file."""
        items = texts_from_inputs(inputs)
        probs = self.probabilities([t for _, t in items])
        return _predictions(items, probs, self.labels, top_k)


class RunTextPredictor(TextPredictor):
    """A text run folder served with torch through the same interface."""

    def __init__(self, run: str | Path) -> None:
        from headstart.inference import load_run

        self.loaded = load_run(run)
        self.path = Path(run)
        self.labels = self.loaded.classes
        self.metadata = {
            "modality": "text",
            "labels": self.labels,
            "model": self.loaded.config.model,
            "strategy": self.loaded.config.strategy,
            "max_length": getattr(self.loaded.model.preprocessing, "max_length", None),
        }

    def probabilities(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        from headstart.inference_text import predict_texts

        preds = predict_texts(
            self.loaded.model,
            self.labels,
            list(texts),
            top_k=len(self.labels),
            batch_size=batch_size,
        )
        index = {c: i for i, c in enumerate(self.labels)}
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for row, p in enumerate(preds):
            for c, v in p.top:
                out[row, index[c]] = v
        return out


def _predictions(
    items: list[tuple[str, str]], probs: np.ndarray, labels: list[str], top_k: int
) -> list[Prediction]:
    k = max(1, min(top_k, len(labels)))
    preds = []
    for (name, text), p in zip(items, probs, strict=True):
        order = np.argsort(-p)[:k]
        top = [(labels[j], float(p[j])) for j in order]
        shown = name if name != text else snippet(text)
        preds.append(Prediction(shown, top[0][0], top[0][1], top))
    return preds


def create_text_app(
    predictor: TextPredictor, *, max_texts: int = 64, max_chars: int = 100_000
) -> Any:
    """FastAPI app: ``POST /predict`` with JSON ``{"texts": [...]}`` (``?top_k=3``),
    ``GET /health``, ``GET /metadata``. Bounded: at most ``max_texts`` texts of ``max_chars``."""
    from fastapi import Body, FastAPI, HTTPException

    from headstart import __version__
    from headstart.export.serve import add_info_routes

    app = FastAPI(title="headstart text model server", version=__version__)
    lock = threading.Lock()

    add_info_routes(app, predictor.metadata)

    @app.post("/predict")
    def predict(payload: dict[str, Any] = Body(...), top_k: int = 1) -> dict[str, Any]:
        texts = payload.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise HTTPException(400, 'send JSON {"texts": ["...", ...]} with one or more strings')
        if len(texts) > max_texts:
            raise HTTPException(413, f"at most {max_texts} texts per request")
        if any(len(t) > max_chars for t in texts):
            raise HTTPException(413, f"each text at most {max_chars} characters")
        try:
            with lock:
                probs = predictor.probabilities(texts)
        except Exception as err:
            log.exception("prediction failed")
            raise HTTPException(422, f"prediction failed: {type(err).__name__}") from None
        k = max(1, min(top_k, len(predictor.labels)))
        out = []
        for p in probs:
            order = np.argsort(-p)[:k]
            top = [{"label": predictor.labels[j], "probability": float(p[j])} for j in order]
            out.append({"label": top[0]["label"], "probability": top[0]["probability"], "top": top})
        return {"predictions": out}

    return app
