"""Rebuild a trained run's model from its folder: ``load_run``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headstart.config import TrainConfig
from headstart.errors import RunError
from headstart.modalities import Modality, modality_for
from headstart.models import Backbone, Preprocessing
from headstart.run import CheckpointInfo, RunFolder, load_checkpoint_file
from headstart.strategies.lora import add_lora, merge_lora


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

    @property
    def modality(self) -> Modality:
        return modality_for(self.config)


def load_run(path: str | Path) -> LoadedRun:
    """Rebuild the model of ``runs/<name>`` from its config and best checkpoint (no download:
    the architecture is built without pretrained weights, then the checkpoint is loaded)."""
    run = RunFolder.open(path)
    config = run.load_config()
    classes = run.load_classes()
    ckpt = load_checkpoint_file(run.checkpoint_for_inference())
    info = CheckpointInfo.from_checkpoint(ckpt)
    # the head actually trained (auto may have chosen few-shot's cosine head)
    head = info.head or config.head_for(config.strategy)
    modality = modality_for(config)
    model = modality.build_backbone(
        config,
        len(classes),
        weights="none",
        head=head,
        label_embeddings=ckpt["state_dict"].get("backbone.head.label_embeddings"),
    )
    modality.restore(model, info.to_dict())
    if config.strategy == "lora":  # the adapters as trained; merged into the weights below
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
