"""``headstart rank``: order candidate backbones for a data set without fine-tuning them.

Each model extracts features of the training split once (through the same on-disk feature
cache as training) and is scored with LogME (:mod:`headstart.evaluation.transferability`);
optionally a linear probe (logistic regression on the training features, accuracy on the
validation split) gives a second, directly interpretable number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from rich.markup import escape
from rich.table import Table

from headstart.console import console, setup_logging
from headstart.data import build_eval_transform, load_splits
from headstart.data.datasets import ImageDataset
from headstart.data.folders import Sample
from headstart.devices import Compute, placed, resolve_compute
from headstart.errors import ModelError
from headstart.evaluation.probe import fit_logistic
from headstart.evaluation.transferability import h_score, logme
from headstart.models import Backbone, create_backbone
from headstart.models.weights_spec import split_model_weights as split_spec
from headstart.training.features import features_for


@dataclass
class RankRow:
    spec: str
    weights: str
    logme: float
    probe_accuracy: float | None
    h_score: float
    feature_dim: int
    seconds: float


def rank_models(
    data: str,
    models: list[str],
    *,
    image_size: int | None = None,
    probe: bool = True,
    val_fraction: float = 0.2,
    seed: int = 42,
    disk_cache: bool = True,
    num_workers: int = 0,
    accelerator: str = "auto",
) -> list[RankRow]:
    """Score each candidate (``spec`` or ``spec@weights``) on ``data``; best LogME first.
    Features are computed on ``accelerator`` (``auto``: the GPU when there is one).

    Example::

        rows = rank_models("data/", ["torchvision:mobilenet_v2", "torchvision:resnet18@none"])

    A candidate that cannot be loaded (unknown model, weights not available offline) is
    skipped and the reason printed; :class:`ModelError` only when none could be scored.
    """
    setup_logging()
    L.seed_everything(seed, verbose=False)
    splits = load_splits(data, val_fraction=val_fraction, seed=seed)
    idx = splits.class_to_idx
    compute = resolve_compute(accelerator)
    rows: list[RankRow] = []
    skipped: list[str] = []
    for candidate in models:
        spec, weights = split_spec(candidate)
        t0 = time.perf_counter()
        try:
            backbone = create_backbone(
                spec, len(splits.classes), weights=weights, image_size=image_size
            )
        except ModelError as err:  # skip it: the other candidates' scores are still worth having
            skipped.append(f"{candidate}: {rank_hint(str(err), spec)}")
            console.print(f"[yellow]skipped[/] {escape(skipped[-1])}")
            continue
        common: dict[str, Any] = {
            "idx": idx,
            "seed": seed,
            "disk_cache": disk_cache,
            "num_workers": num_workers,
            "compute": compute,
        }
        tr_x, tr_y = _features(backbone, splits.train, "train", **common)
        score = logme(tr_x.numpy(), tr_y.numpy())
        acc = None
        if probe:
            va_x, va_y = _features(backbone, splits.val, "val", **common)
            p = fit_logistic(tr_x, tr_y, len(splits.classes))
            acc = float((p.logits(va_x).argmax(1) == va_y).float().mean())
        rows.append(
            RankRow(
                spec,
                backbone.weights_label or weights,
                score,
                acc,
                h_score(tr_x.numpy(), tr_y.numpy()),
                int(tr_x.shape[1]),
                time.perf_counter() - t0,
            )
        )
    if not rows:
        raise ModelError("no candidate could be scored: " + "; ".join(skipped))
    rows.sort(key=lambda r: r.logme, reverse=True)
    return rows


def rank_hint(message: str, spec: str) -> str:
    """A model error's hint in rank's terms: the adapters word it for ``train --weights``,
    whereas rank takes the weights after ``@`` in the candidate (``spec@none``)."""
    return message.replace("--weights <file>", f"{spec}@<file>").replace(
        "--weights none", f"{spec}@none"
    )


def rank_stages(
    data: str,
    model: str,
    *,
    image_size: int | None = None,
    probe: bool = True,
    val_fraction: float = 0.2,
    seed: int = 42,
    batch_size: int = 32,
    accelerator: str = "auto",
) -> list[RankRow]:
    """Score the output of every stage of one model (``spec`` or ``spec@weights``): where to cut
    the backbone. One forward pass per image (on ``accelerator``) captures all stages; rows come
    in stage order."""
    setup_logging()
    L.seed_everything(seed, verbose=False)
    splits = load_splits(data, val_fraction=val_fraction, seed=seed)
    idx = splits.class_to_idx
    spec, weights = split_spec(model)
    backbone = create_backbone(
        spec, len(splits.classes), weights=weights, image_size=image_size
    ).eval()
    indices = list(range(len(backbone.stages)))
    tf = build_eval_transform(backbone.preprocessing)
    compute = resolve_compute(accelerator)

    def collect(samples: list[Sample]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            ImageDataset(samples, idx, tf, backbone.preprocessing.resize), batch_size=batch_size,
            pin_memory=compute.pin_memory,
        )  # fmt: skip
        parts: dict[int, list[torch.Tensor]] = {i: [] for i in indices}
        ys = []
        with torch.inference_mode(), placed(backbone, compute):
            for x, y in loader:
                for i, f in backbone.stage_features(compute.to(x), indices).items():
                    parts[i].append(f.float().cpu())
                ys.append(y)
        return {i: torch.cat(v) for i, v in parts.items()}, torch.cat(ys)

    t0 = time.perf_counter()
    tr, tr_y = collect(splits.train)
    va, va_y = collect(splits.val) if probe else ({}, torch.empty(0))
    per_stage = (time.perf_counter() - t0) / len(indices)
    rows = []
    for i in indices:
        x = tr[i].clone()
        acc = None
        if probe:
            p = fit_logistic(x, tr_y, len(splits.classes))
            acc = float((p.logits(va[i].clone()).argmax(1) == va_y).float().mean())
        rows.append(
            RankRow(
                f"{spec} cut after {backbone.stages[i].name}",
                backbone.weights_label or weights,
                logme(x.numpy(), tr_y.numpy()),
                acc,
                h_score(x.numpy(), tr_y.numpy()),
                int(x.shape[1]),
                per_stage,
            )
        )
    return rows


def _features(
    backbone: Backbone,
    samples: list[Sample],
    split: str,
    *,
    idx: dict[str, int],
    seed: int,
    disk_cache: bool,
    num_workers: int,
    compute: Compute,
) -> tuple[torch.Tensor, torch.Tensor]:
    ds = ImageDataset(
        samples, idx, build_eval_transform(backbone.preprocessing), backbone.preprocessing.resize
    )
    x, y, _ = features_for(
        backbone,
        ds,
        samples,
        idx,
        split=split,
        seed=seed,
        use_disk_cache=disk_cache,
        num_workers=num_workers,
        compute=compute,
    )
    return x, y


def ranking_table(rows: list[RankRow], first: str = "rank") -> Table:
    t = Table(title="transferability ranking (higher LogME = better expected transfer)")
    numeric = {first, "LogME", "H-score", "probe val acc", "dim", "seconds"}
    for col in (first, "model", "weights", "LogME", "H-score", "probe val acc", "dim", "seconds"):
        t.add_column(
            col,
            justify="right" if col in numeric else "left",
            overflow="fold",
            no_wrap=col in numeric,
        )
    for i, r in enumerate(rows, 1):
        acc = "-" if r.probe_accuracy is None else f"{100 * r.probe_accuracy:.1f} %"
        cells = [
            str(i),
            r.spec,
            r.weights,
            f"{r.logme:.4f}",
            f"{r.h_score:.3f}",
            acc,
            str(r.feature_dim),
            f"{r.seconds:.1f}",
        ]
        t.add_row(*cells)
    return t


def print_ranking(rows: list[RankRow], sort: bool = True) -> None:
    ordered = sorted(rows, key=lambda r: r.logme, reverse=True) if sort else rows
    console.print(ranking_table(ordered, "rank" if sort else "stage"))
