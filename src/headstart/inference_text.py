"""Prediction on raw strings with a text run's model (see :func:`headstart.predict`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from headstart.data.text import tokenize
from headstart.files import Prediction
from headstart.models.backbone import Backbone
from headstart.text_files import snippet, texts_from_inputs


@torch.inference_mode()
def predict_texts(
    model: Backbone,
    classes: list[str],
    inputs: Sequence[str | Path],
    *,
    top_k: int = 1,
    batch_size: int = 32,
) -> list[Prediction]:
    """Label and probability per text; ``Prediction.path`` is the .txt file or a snippet."""
    items = texts_from_inputs(inputs)
    pre = model.preprocessing
    collate = model.collate_fn
    assert collate is not None
    model.eval()
    k = max(1, min(top_k, len(classes)))
    out: list[Prediction] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        encodings = tokenize(pre, [t for _, t in chunk])  # type: ignore[arg-type]
        batch, _ = collate([(e, 0) for e in encodings])
        probs = model(batch).softmax(1)
        values, indices = probs.topk(k, dim=1)
        for (name, text), v, i in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            top = [(classes[j], float(p)) for j, p in zip(i, v, strict=True)]
            label = name if name != text else snippet(text)
            out.append(Prediction(label, top[0][0], top[0][1], top))
    return out
