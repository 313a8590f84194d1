"""Self-supervised pretext training on the user's unlabeled images: 4-way rotation.

``headstart pretrain unlabeled/ --task rotation -o pretrained/`` continues training a backbone to
predict by how much each image was rotated (0, 90, 180 or 270 degrees) and writes
``pretrained/backbone.pt``, a plain state_dict of the backbone body that
``headstart train data/ --model <same spec> --weights pretrained/backbone.pt`` loads like any local
weights file (the rotation classifier is not part of it).

Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018: recognising an object's canonical orientation requires recognising the
object, so the rotation task teaches semantic features without labels. The loss is
:class:`RotationLoss`. Training runs through the ordinary :class:`HeadstartModule` (strategy,
param groups, LR schedule, checkpoints), so ``--strategy`` chooses which stages the pretext task
may change (``fine-tune`` by default; ``partial`` keeps the early stages as they are).
``--resume`` continues an interrupted pretraining from its ``last.ckpt``.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from headstart.adapt.domain import unlabeled_samples
from headstart.config import TrainConfig
from headstart.console import console, setup_logging
from headstart.data import build_eval_transform, build_train_transform
from headstart.data.datasets import ImageDataset
from headstart.data.folders import Sample
from headstart.data.samplers import EpochShuffleSampler
from headstart.data.splits import stratified_split
from headstart.errors import DataError, RunError
from headstart.modalities import ImageModality
from headstart.models import Backbone
from headstart.run import RunFolder, atomic_write_bytes, atomic_write_text
from headstart.strategies import make_strategy
from headstart.training.module import HeadstartModule
from headstart.training.plan import bn_policy, num_workers_for
from headstart.training.trainer import make_trainer

log = logging.getLogger(__name__)

TASKS = ("rotation",)
ROTATIONS = 4


class RotationLoss(nn.Module):
    r"""4-way rotation prediction (Gidaris et al., ICLR 2018).

    For an image :math:`x` and :math:`g_k(x)` = :math:`x` rotated by :math:`k \cdot 90` degrees,
    :math:`k \in \{0, 1, 2, 3\}`, a classifier :math:`F` over the backbone's features minimises

    .. math::

        L(x) = -\frac{1}{4}\sum_{k=0}^{3} \log F_k(g_k(x)),

    i.e. cross-entropy with the rotation index as the label, averaged over the rotations.
    ``forward(model, images)`` builds all four rotations of every image in the batch (exact:
    ``torch.rot90`` of square crops, no interpolation) and returns ``(loss, logits, labels)``.
    """

    def forward(
        self, model: nn.Module, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, k = rotate_batch(images)
        logits = model(x)
        return F.cross_entropy(logits, k), logits, k


def rotate_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(4N, C, H, W)`` rotations (all of image 0 first) and their labels 0..3 (x 90 degrees
    counter-clockwise)."""
    rots = [torch.rot90(images, k, dims=(2, 3)) for k in range(ROTATIONS)]
    x = torch.stack(rots, 1).flatten(0, 1)
    k = torch.arange(ROTATIONS, device=images.device).repeat(images.shape[0])
    return x, k


class _RotationStep(nn.Module):
    """HeadstartModule training hook: the batch holds unrotated images; the loss rotates them."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = RotationLoss()

    def forward(  # type: ignore[override]
        self, module: Any, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        loss, logits, k = self.loss(module, batch[0])
        return loss, logits, k, {}


class _RotatedEval(Dataset[tuple[torch.Tensor, int]]):
    """Every image in each of its four rotations (validation of the pretext task)."""

    def __init__(self, base: ImageDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base) * ROTATIONS

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        img, _ = self.base[j // ROTATIONS]
        k = j % ROTATIONS
        return torch.rot90(img, k, dims=(1, 2)), k


@dataclass
class PretrainResult:
    """Where the weights are and how well the pretext task was learned."""

    out: Path
    weights: Path
    metrics: dict[str, Any]


def pretrain(
    data: str | Path | None = None,
    *,
    task: str = "rotation",
    out: str | Path = "runs/pretrain-rotation",
    resume: str | Path | None = None,
    **settings: Any,
) -> PretrainResult:
    """Pretext-train a backbone on unlabeled images and save it as a ``--weights`` file.

    ``settings`` are :class:`TrainConfig` fields (model, weights, image_size, strategy, epochs,
    batch_size, lr, augment, seed, ...); ``data`` is a folder of images (searched recursively;
    labels, if any, are ignored).

    Example::

        r = headstart.adapt.pretext.pretrain("unlabeled/", model="torchvision:resnet18", epochs=5)
        headstart.train(data="labelled/", model="torchvision:resnet18", weights=str(r.weights))
    """
    setup_logging()
    t0 = time.perf_counter()
    if task not in TASKS:
        raise DataError(f"--task {task!r} is not available; pretext tasks: {', '.join(TASKS)}")
    config, run, ckpt_path = _open_run(data, out, resume, settings)
    L.seed_everything(config.seed, workers=True, verbose=False)
    samples = unlabeled_samples(config.data, "pretrain data")
    if len(samples) < 10:
        raise DataError(f"{config.data}: {len(samples)} images; pretraining needs at least 10")
    train_idx, val_idx = stratified_split([""] * len(samples), 0.1, config.seed)
    train = [samples[i] for i in train_idx]
    held_out = [samples[i] for i in val_idx]
    backbone = ImageModality().build_backbone(config, ROTATIONS, train=train, head="linear")
    strategy = make_strategy(config)
    strategy.apply(backbone, 0)
    bn_frozen, _ = bn_policy(config)
    backbone.bn_frozen = [bn_frozen] * len(backbone.stages)
    backbone.to(memory_format=torch.channels_last)
    train_loader, val_loader = _loaders(config, backbone, train, held_out)
    module = HeadstartModule(
        backbone, strategy, config, steps_per_epoch=len(train_loader), num_classes=ROTATIONS,
        train_hook=_RotationStep(),
    )  # fmt: skip
    console.print(
        f"[bold]pretext task {task}[/] on {len(train)} images (+{len(held_out)} held out), "
        f"{config.model} at {backbone.preprocessing.crop}px, {strategy.describe(backbone)}"
    )
    trainer = make_trainer(
        config, run.path, steps_per_epoch=len(train_loader), checkpoints=run.checkpoints,
        log_csv=run.log_path, resume_command=f"headstart pretrain --resume {run.path}",
    )  # fmt: skip
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        return PretrainResult(run.path, run.path / "backbone.pt", {})
    metrics: dict[str, Any] = {
        "task": task,
        "model": config.model,
        "start_weights": config.weights,
        "rotation_val_accuracy": float(trainer.callback_metrics.get("val_acc", float("nan"))),
        "train_images": len(train),
        "val_images": len(held_out),
        "epochs": trainer.current_epoch,
        "strategy": strategy.describe(backbone),
    }
    return _save(run, backbone, metrics, t0)


def _open_run(
    data: str | Path | None, out: str | Path, resume: str | Path | None, settings: dict[str, Any]
) -> tuple[TrainConfig, RunFolder, Path | None]:
    """``(config, run folder, checkpoint to resume from)``: a new pretraining run folder, or
    the one ``--resume`` names (its stale temp files removed)."""
    if resume is not None:
        run = RunFolder(Path(resume))
        if not run.config_path.is_file() or not run.last_checkpoint.is_file():
            raise RunError(f"--resume {resume}: no config.yaml and checkpoints/last.ckpt there")
        run.remove_stale_temp_files()  # left by a process killed while writing
        return run.load_config(), run, run.last_checkpoint
    if data is None:
        raise DataError("give a folder of unlabeled images: headstart pretrain unlabeled/")
    defaults = {"strategy": "fine-tune", "epochs": 5, "lr": 1e-3, "backbone_lr_mult": 1.0}
    config = TrainConfig.create(data=str(data), **{**defaults, **settings})
    if config.strategy in ("feature-extract", "auto") or config.adapt != "none":
        raise DataError(
            f"pretrain trains backbone stages: use --strategy fine-tune, partial or gradual "
            f"(not {config.strategy})"
        )
    run = RunFolder.create(out)
    run.save_config(config)
    return config, run, None


def _loaders(
    config: TrainConfig, backbone: Backbone, train: list[Sample], held_out: list[Sample]
) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Augmented training images (rotated inside the step) and every rotation of the
    held-out images, un-augmented."""
    pre = backbone.preprocessing
    idx = {train[0].label: 0}
    train_set = ImageDataset(
        train,
        idx,
        build_train_transform(pre, config.augment, config.random_flips),
        pre.resize,
        seed=config.seed,
    )
    val_set = _RotatedEval(ImageDataset(held_out, idx, build_eval_transform(pre), pre.resize))
    workers = num_workers_for(config)
    kw: dict[str, Any] = {"num_workers": workers, "persistent_workers": workers > 0}
    # 4 rotations per image: a batch of batch_size // 4 images gives batch_size inputs
    per_batch = max(1, config.batch_size // ROTATIONS)
    train_loader: DataLoader[Any] = DataLoader(
        train_set, batch_size=per_batch, sampler=EpochShuffleSampler(len(train_set), config.seed),
        drop_last=len(train_set) % per_batch == 1, **kw,
    )  # fmt: skip
    return train_loader, DataLoader(val_set, batch_size=config.batch_size, **kw)


def _save(run: RunFolder, backbone: Backbone, metrics: dict[str, Any], t0: float) -> PretrainResult:
    """The last epoch's backbone body as ``backbone.pt`` (the pretext task's val loss says
    little about transfer) and metrics.json, both written atomically."""
    backbone.to(memory_format=torch.contiguous_format)
    weights = run.path / "backbone.pt"
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in backbone.body.state_dict().items()}, buf)
    atomic_write_bytes(weights, buf.getvalue())
    metrics.update(weights_file=weights.name, seconds=round(time.perf_counter() - t0, 1))
    atomic_write_text(run.metrics_path, json.dumps(metrics, indent=2))
    rotation_acc = metrics["rotation_val_accuracy"]
    console.print(
        f"rotation accuracy on held-out images {100 * rotation_acc:.1f} % "
        f"(chance 25 %). Weights: {weights}\n"
        f"use them: headstart train <data> --model {metrics['model']} --weights {weights}"
    )
    return PretrainResult(run.path, weights, metrics)
