"""Load a trained run and use it: ``load_run``, ``evaluate``, ``predict``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from headstart.config import TrainConfig
from headstart.data import build_eval_transform
from headstart.data.datasets import load_rgb
from headstart.data.folders import Sample, load_source
from headstart.errors import DataError, RunError
from headstart.files import Prediction, collect_images
from headstart.models import Backbone, Preprocessing, create_backbone
from headstart.run import RunFolder, load_checkpoint_file


@dataclass
class LoadedRun:
    """A run folder's model (best checkpoint, eval mode), classes and config."""

    run: RunFolder
    config: TrainConfig
    classes: list[str]
    model: Backbone

    @property
    def preprocessing(self) -> Preprocessing:
        return self.model.preprocessing


def load_run(path: str | Path) -> LoadedRun:
    """Rebuild the model of ``runs/<name>`` from its config and best checkpoint (no download:
    the architecture is built without pretrained weights, then the checkpoint is loaded)."""
    run = RunFolder.open(path)
    config = run.load_config()
    classes = run.load_classes()
    ckpt = load_checkpoint_file(run.checkpoint_for_inference())
    meta = ckpt.get("headstart", {})
    # the head actually trained (auto may have chosen few-shot's cosine head)
    head = str(meta.get("head") or config.head_for(config.strategy))
    label_emb = ckpt["state_dict"].get("backbone.head.label_embeddings")
    model = create_backbone(
        config.model,
        len(classes),
        weights="none",
        head=head,
        head_hidden=config.head_hidden,
        head_dropout=config.head_dropout,
        image_size=None if config.image_size == "auto" else config.image_size,
        label_embeddings=label_emb,
        pooling=config.pooling,
        max_length=config.max_length,
    )
    if "preprocessing" in meta and model.modality == "image":  # text: rebuilt from the model
        model.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    if config.strategy == "lora":  # the adapters as trained; merged into the weights below
        from headstart.strategies.lora import add_lora, merge_lora

        add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout)
    state = {
        k.removeprefix("backbone."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("backbone.")
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunError(
            f"checkpoint of {path} does not fit {config.model}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if config.strategy == "lora":
        merge_lora(model)
    model.eval()
    return LoadedRun(run, config, classes, model)


def evaluate(
    run: str | Path | LoadedRun, data: str | Path, *, batch_size: int = 64
) -> dict[str, Any]:
    """Metrics of a trained run on a labelled folder/CSV whose classes are among the run's."""
    from headstart.data.text import eval_dataset, text_reader
    from headstart.evaluation import classification_metrics
    from headstart.training.fit import predict_logits

    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    c = loaded.config
    text = loaded.model.modality == "text"
    read = text_reader(c.text_column or "text", c.label_column) if text else load_source
    samples = read(data, Counter(), False)
    unknown = sorted({s.label for s in samples} - set(loaded.classes))
    if unknown:
        raise DataError(
            f"{data} has classes the model was not trained on: {', '.join(unknown)} (model classes: {', '.join(loaded.classes)})"
        )
    idx = {name: i for i, name in enumerate(loaded.classes)}
    ds = eval_dataset(loaded.model, samples, idx)
    logits, targets = predict_logits(loaded.model, ds, batch_size=batch_size)
    return classification_metrics(logits, targets, loaded.classes)


def report(run: str | Path | LoadedRun) -> Path:
    """Regenerate ``report.html`` of a run (recomputes validation predictions)."""
    from headstart.data.folders import splits_for
    from headstart.data.text import eval_dataset, sample_text
    from headstart.evaluation.report import ValPredictions, write_report
    from headstart.training.fit import predict_logits

    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    splits = splits_for(loaded.config)
    idx = {name: i for i, name in enumerate(loaded.classes)}
    ds = eval_dataset(loaded.model, splits.val, idx)
    logits, targets = predict_logits(loaded.model, ds)
    texts = [sample_text(s) for s in splits.val] if loaded.model.modality == "text" else None
    return write_report(
        loaded.run,
        ValPredictions(logits.softmax(1), targets, [str(s.path) for s in splits.val], texts),
    )


@torch.inference_mode()
def predict(
    run: str | Path | LoadedRun, inputs: list[str | Path], *, top_k: int = 1, batch_size: int = 32
) -> list[Prediction]:
    """Label and probability for each image (files or folders); for a text run, each input
    is a text (an existing ``.txt`` file is read)."""
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    if loaded.model.modality == "text":
        from headstart.inference_text import predict_texts

        return predict_texts(
            loaded.model, loaded.classes, inputs, top_k=top_k, batch_size=batch_size
        )
    files = collect_images(inputs)
    tf = build_eval_transform(loaded.preprocessing)
    out: list[Prediction] = []
    k = max(1, min(top_k, len(loaded.classes)))
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        batch = []
        for f in chunk:
            try:
                batch.append(tf(load_rgb(f, loaded.preprocessing.resize)))
            except Exception as err:
                raise DataError(
                    f"cannot read image {f}: {err}. Replace the file or leave it out of the inputs."
                ) from None
        probs = loaded.model(torch.stack(batch)).softmax(1)
        values, indices = probs.topk(k, dim=1)
        for f, v, i in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            top = [(loaded.classes[j], float(p)) for j, p in zip(i, v, strict=True)]
            out.append(Prediction(str(f), top[0][0], top[0][1], top))
    return out


__all__ = ["LoadedRun", "Prediction", "Sample", "evaluate", "load_run", "predict", "report"]
