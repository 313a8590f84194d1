"""Zero-shot classification: classes from their names alone.

Two routes, both ending in an ordinary headstart head:

* **CLIP** (Radford et al., "Learning Transferable Visual Models From Natural Language
  Supervision", ICML 2021) — a model with a text tower (``hf:<clip-folder-or-repo>``, loaded with
  ``transformers.CLIPModel``). Each class name is put into prompt templates ("a photo of a {}."),
  the text embeddings of all templates are L2-normalised and averaged (prompt ensembling), and the
  result becomes the class vector of a :class:`~headstart.models.heads.CosineClassifier` with
  CLIP's own temperature. That head can be used as it is, exported, or fine-tuned further
  (zero-shot initialisation: ``--head cosine --head-init zero-shot``).
* **Label-name embeddings** for models without a text tower (``--head semantic
  --label-embeddings minilm``) — the offline all-MiniLM-L6-v2 sentence encoder maps class names
  to vectors; a :class:`~headstart.models.heads.SemanticHead` learns to project image features
  into that space on the seen classes, so classes never seen in training can be scored by name
  (DeViSE, Frome et al. 2013).

The text encoders of both routes live in :mod:`headstart.models.label_text`. Nothing is
downloaded: every ``from_pretrained`` call is ``local_files_only=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from headstart.config import TrainConfig
from headstart.errors import ModelError
from headstart.evaluation.loading import load_run
from headstart.inference import evaluate, predict
from headstart.models import Backbone, create_backbone
from headstart.models.heads import CosineClassifier, SemanticHead, head_kind
from headstart.models.label_text import (
    MINILM,
    PROMPT_ENSEMBLE,
    clip_text_embeddings,
    expand_prompts,
    is_clip,
    label_embeddings,
    readable,
)
from headstart.run import CheckpointInfo, RunFolder, write_model_checkpoint
from headstart.training.head_init import text_vectors

__all__ = [
    "MINILM",
    "PROMPT_ENSEMBLE",
    "ZeroShotResult",
    "clip_text_embeddings",
    "expand_prompts",
    "is_clip",
    "label_embeddings",
    "readable",
    "zero_shot",
]

log = logging.getLogger(__name__)


@dataclass
class ZeroShotResult:
    """What :func:`zero_shot` returns: the saved run folder, its classes, metrics on labelled
    data (when given) and predictions for the given images."""

    run_dir: Path
    classes: list[str]
    metrics: dict[str, Any] | None = None
    predictions: list[Any] = field(default_factory=list)


def _labels_from(labels: Sequence[str] | None, eval_data: str | None) -> list[str]:
    if labels:
        names = [str(n).strip() for n in labels if str(n).strip()]
    elif eval_data is not None:
        from headstart.data import load_splits

        names = load_splits(eval_data).classes
    else:
        names = []
    if len(names) < 2:
        raise ModelError(
            "zero-shot needs at least two class names: --labels 'cat,dog,...' (or --eval a "
            "labelled folder, whose class folder names are used)"
        )
    if len(set(names)) != len(names):
        raise ModelError(f"class names repeat in --labels: {', '.join(names)}")
    return names


def zero_shot(
    images: Sequence[str | Path] = (),
    *,
    labels: Sequence[str] | None = None,
    model: str | None = None,
    prompts: Sequence[str] = ("a photo of a {}.",),
    run: str | Path | None = None,
    eval_data: str | None = None,
    out: str | Path | None = None,
    top_k: int = 1,
    accelerator: str = "auto",
) -> ZeroShotResult:
    """Build a classifier for ``labels`` without training images and save it as an ordinary run
    folder (evaluate, report-free predict, export and serve work on it; ``headstart train
    --config <run>/config.yaml`` fine-tunes it from its zero-shot start).

    Either ``model="hf:<CLIP folder>"`` (class vectors from the text tower, prompt-ensembled) or
    ``run=<a run trained with --head semantic>`` (the class names' label embeddings replace the
    trained classes — classes never seen in training can be named). Images are scored on
    ``accelerator`` (``auto``: the GPU when there is one).

    Example::

        r = zero_shot(["img/"], labels=["cat", "dog"], model="hf:./tiny-clip")
        r.predictions[0].label
    """
    if (model is None) == (run is None):
        raise ModelError("give either --model hf:<CLIP folder> or --run <semantic-head run>")
    L.seed_everything(0, verbose=False)
    names = _labels_from(labels, eval_data)
    template = list(prompts)
    if run is not None:
        backbone, config = _from_semantic_run(run, names)
        head_init = "semantic label embeddings"
    else:
        assert model is not None
        config = TrainConfig.create(
            data=eval_data or (str(images[0]) if images else "."), model=model, head="cosine",
            head_init="zero-shot", prompts=template, strategy="feature-extract",
        )  # fmt: skip
        backbone = create_backbone(model, len(names), head="cosine")
        vectors, scale = text_vectors(backbone, names, template)
        assert isinstance(backbone.head, CosineClassifier)
        backbone.head.set_classes(vectors, scale=scale)
        head_init = "zero-shot (CLIP text)"
    backbone.eval()
    default = RunFolder.default_path(config)
    folder = RunFolder.create(out or default.with_name(f"zero-shot-{default.name}"))
    folder.save_config(config)
    folder.save_classes(names)
    info = CheckpointInfo(
        model=backbone.spec,
        head=head_kind(backbone.head),
        preprocessing=backbone.preprocessing.to_dict(),
        zero_shot={"classes": names, "prompts": expand_prompts(template)},
    )
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    write_model_checkpoint(folder.best_checkpoint, state, info)
    loaded = load_run(folder.path)
    metrics = (
        evaluate(loaded, eval_data, accelerator=accelerator) if eval_data is not None else None
    )
    summary: dict[str, Any] = {
        "run": {
            "model": backbone.spec,
            "weights": backbone.weights_label,
            "strategy": "zero-shot",
            "head": head_kind(backbone.head),
            "head_init": head_init,
            "prompts": expand_prompts(template),
            "source_run": str(run) if run is not None else None,
        }
    }
    if metrics is not None:
        summary["val"] = metrics
    folder.save_metrics(summary)
    preds = predict(loaded, list(images), top_k=top_k, accelerator=accelerator) if images else []
    return ZeroShotResult(folder.path, names, metrics, preds)


def _from_semantic_run(run: str | Path, names: list[str]) -> tuple[Backbone, TrainConfig]:
    """A run trained with ``--head semantic`` whose label embeddings now name ``names``."""
    source = load_run(run)
    head = source.model.head
    if not isinstance(head, SemanticHead):
        raise ModelError(
            f"--run {run} has a {head_kind(head)} head; zero-shot to new names needs a run "
            "trained with --head semantic --label-embeddings minilm"
        )
    emb_source = source.config.label_embeddings or MINILM
    head.set_label_embeddings(label_embeddings(names, emb_source, source.config.prompts))
    return source.model, source.config.replace(strategy="feature-extract")
