"""The Hugging Face metadata header of MODEL_CARD.md: a YAML block between ``---`` lines that the
Hub reads (license, tags, pipeline_tag, base_model, metrics and their measured values in
``model-index``); see https://huggingface.co/docs/hub/model-cards.

Example of a header::

    ---
    license: bsd-3-clause
    library_name: headstart
    pipeline_tag: image-classification
    tags: [headstart, transfer-learning, image-classification, torchvision, onnx]
    metrics: [accuracy, f1]
    model-index:
    - name: mlp
      results:
      - task: {type: image-classification}
        dataset: {name: data, type: imagefolder, split: validation}
        metrics:
        - {type: accuracy, value: 0.932, name: validation accuracy}
    ---
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: the Hub's pipeline tag of each modality's classifier
PIPELINE_TAGS = {"image": "image-classification", "text": "text-classification"}
#: the license of a model family's pretrained weights, where headstart knows it (else "unknown":
#: check the weights' own terms before publishing)
LICENSES = {"torchvision": "bsd-3-clause", "text": "apache-2.0"}
#: the Hub repository of a headstart short name's weights
HUB_MODELS = {"text:minilm": "sentence-transformers/all-MiniLM-L6-v2"}
_SPLITS = {"val": "validation", "test": "test"}


def base_model(model: str, weights: str) -> str | None:
    """The Hub id the weights came from, where there is one: ``hf:org/name``, ``timm:name``
    with timm's default weights (the ``timm/`` organisation), the known short names; None for
    random init (``weights`` "none"), weights files, local folders and torchvision."""
    if weights == "none":
        return None
    source, _, name = model.partition(":")
    if model in HUB_MODELS:
        return HUB_MODELS[model]
    if source == "hf" and name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return None if Path(name).exists() else name
    if source == "timm" and weights.startswith("timm pretrained"):
        return f"timm/{name}"
    return None


def _results(metrics: dict[str, Any], modality: str, name: str, data: str) -> list[dict]:
    """model-index ``results``: accuracy and macro F1 of the val (and test) split."""
    results = []
    for split, hub_split in _SPLITS.items():
        block = metrics.get(split)
        if not isinstance(block, dict) or "accuracy" not in block:
            continue
        values = [
            {"type": "accuracy", "value": round(float(block["accuracy"]), 4),
             "name": f"{hub_split} accuracy"},
        ]  # fmt: skip
        if "macro_f1" in block:
            values.append(
                {"type": "f1", "value": round(float(block["macro_f1"]), 4),
                 "name": f"{hub_split} macro F1", "args": {"average": "macro"}}
            )  # fmt: skip
        results.append(
            {
                "task": {"type": PIPELINE_TAGS.get(modality, modality)},
                "dataset": {"name": data, "type": f"{modality}folder", "split": hub_split},
                "metrics": values,
            }
        )
    return [{"name": name, "results": results}] if results else []


def front_matter(
    meta: dict[str, Any], metrics: dict[str, Any], *, name: str, data: str, fmt: str
) -> str:
    """The ``---``-delimited YAML header for an export with metadata ``meta`` (its ``model``,
    ``weights``, ``modality``), the run's ``metrics.json`` ``metrics``, the run's ``name``, the
    training data's ``data`` name, and the export format ``fmt``."""
    modality = str(meta.get("modality", "image"))
    family = str(meta["model"]).partition(":")[0]
    pipeline = PIPELINE_TAGS.get(modality, f"{modality}-classification")
    header: dict[str, Any] = {
        "license": LICENSES.get(family, "unknown"),
        "library_name": "headstart",
        "pipeline_tag": pipeline,
        "tags": ["headstart", "transfer-learning", pipeline, family, fmt],
    }
    hub = base_model(str(meta["model"]), str(meta.get("weights", "")))
    if hub is not None:
        header["base_model"] = hub
    index = _results(metrics, modality, name, data)
    if index:
        header["metrics"] = ["accuracy", "f1"]
        header["model-index"] = index
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n"


def read_front_matter(card: str) -> dict[str, Any]:
    """The YAML header of a model card's text (empty when it has none)."""
    if not card.startswith("---\n"):
        return {}
    block, sep, _ = card[4:].partition("\n---\n")
    loaded = yaml.safe_load(block) if sep else None
    return loaded if isinstance(loaded, dict) else {}
