"""Summarise a finished run: evaluate its best checkpoint, write metrics.json and the report,
print the tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from headstart.config import TrainConfig
from headstart.console import console
from headstart.data import DataSplits
from headstart.devices import compute_for
from headstart.evaluation.predict import head_logits, predict_logits
from headstart.evaluation.report import ValPredictions
from headstart.modalities import Modality
from headstart.models import Backbone
from headstart.models.heads import head_kind
from headstart.run import RunFolder, load_checkpoint_file, save_weights
from headstart.tasks import Task
from headstart.training.activations import activation_logits
from headstart.training.distributed import unsharded_copy
from headstart.training.loaders import Loaders
from headstart.training.module import HeadstartModule
from headstart.training.plan import Plan
from headstart.training.trackers import log_final


@dataclass
class Finished:
    """A trained run, ready to be summarised."""

    config: TrainConfig
    run: RunFolder
    splits: DataSplits
    backbone: Backbone
    module: HeadstartModule
    plan: Plan
    loaders: Loaders
    modality: Modality
    task: Task
    epochs_run: int
    cache_hits: list[str]


def best_model(f: Finished) -> Backbone:
    """The best checkpoint's model, in eval mode. Under FSDP the trained module holds only
    its shard: the checkpoint is loaded into an unsharded copy, as ``headstart evaluate``
    does."""
    if f.config.strategy_dist == "fsdp":
        return unsharded_copy(f.run.path)
    f.module.load_state_dict(load_checkpoint_file(f.run.checkpoint_for_inference())["state_dict"])
    f.module.eval()
    return f.backbone


def evaluate_best(
    f: Finished, model: Backbone
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """``(metrics blocks val [and test], val logits, val targets)`` of the best checkpoint."""
    idx, compute = f.splits.class_to_idx, compute_for(f.config)
    if f.loaders.val_features is not None:
        va_x, val_targets = f.loaders.val_features
        val_logits = head_logits(model, va_x)
    elif (  # stored rows hold for the best model only when its prefix never trained
        f.loaders.val_activations is not None
        and f.plan.activations is not None
        and f.plan.activations.until is None
    ):
        val_logits, val_targets = activation_logits(
            model, f.plan.activations.cut, f.loaders.val_activations, compute=compute
        )
    else:
        val_set = f.modality.dataset(model, f.splits.val, idx, seed=f.config.seed)
        val_logits, val_targets = predict_logits(
            model, val_set, f.plan.num_workers, compute=compute
        )
    task = f.task.calibrated(val_logits, val_targets)  # multi-label: thresholds tuned on val
    results = {"val": task.metrics(val_logits, val_targets, f.splits.classes)}
    if f.splits.test:
        test_set = f.modality.dataset(model, f.splits.test, idx, seed=f.config.seed)
        logits, targets = predict_logits(model, test_set, f.plan.num_workers, compute=compute)
        results["test"] = task.metrics(logits, targets, f.splits.classes)
    return results, val_logits, val_targets


def run_block(f: Finished, seconds: float) -> dict[str, Any]:
    """metrics.json's ``run`` block: what was trained, how, and why."""
    b, p, splits = f.backbone, f.plan, f.splits
    return {
        "model": f.config.model,
        "weights": b.weights_label,
        "preprocessing": b.preprocessing.to_dict(),
        "input": f.modality.describe_input(b),
        "strategy": p.strategy.name,
        "strategy_plan": p.strategy.describe(b),
        **p.to_dict(),
        "unfreeze_events": [[e, names] for e, names in f.module.unfreeze_events],
        "stages": b.stage_names,
        "trainable_params_start": p.trainable,
        "total_params": p.total,
        "cached_features": p.cached_features,
        "feature_cache_hits": f.cache_hits,
        "feature_views": f.config.feature_views if p.cached_features else None,
        "head": head_kind(b.head),
        "head_init": p.head_init,
        "epochs_run": f.epochs_run,
        "best_checkpoint": f.run.checkpoint_for_inference().name,
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "test_images": len(splits.test),
        "skipped_files": dict(splits.skipped),
        "seconds": round(seconds, 2),
    }


def write_summary(
    f: Finished, results: dict[str, Any], val_logits: torch.Tensor, val_targets: torch.Tensor
) -> None:
    """metrics.json, model.safetensors, the trackers' final metrics, report.html and the
    printed per-split tables."""
    f.run.save_metrics(results)
    if f.config.strategy_dist != "fsdp":  # FSDP checkpoints are sharded folders
        save_weights(f.run.weights_path, load_checkpoint_file(f.run.checkpoint_for_inference()))
    log_final(f.config, f.run.path, results)
    val = ValPredictions(
        f.task.probabilities(val_logits), val_targets, [str(x.path) for x in f.splits.val],
        texts=f.modality.display(f.splits.val),
    )  # fmt: skip
    report = f.task.write_report(f.run, val)
    for split in ("val", "test"):
        if split in results:
            samples = results[split]["samples"]
            console.print(
                f.task.metrics_table(results[split], f"{split} ({samples} {f.modality.unit})")
            )
    if "target_eval" in results:  # --target-eval (domain adaptation): the number that matters
        console.print(target_line(results["target_eval"], results.get("adaptation")))
    seconds = results["run"]["seconds"]
    console.print(f"run folder: {f.run.path}   ({seconds:.1f}s)   report: {report}", markup=False)


def target_line(target: dict[str, Any], adaptation: dict[str, Any] | None) -> str:
    """The printed summary of ``--target-eval``: accuracy there and, with ``--adapt``, the
    source-only baseline's and the gain."""
    line = f"target domain ({target['samples']} labelled): accuracy {target['accuracy']:.4f}"
    if adaptation and "gain_points" in adaptation:
        line += (
            f" with --adapt {adaptation.get('method', '')}".rstrip()
            + f", source-only {adaptation['source_only_target_accuracy']:.4f}: "
            f"{adaptation['gain_points']:+.2f} points"
        )
    elif adaptation and "note" in adaptation:
        line += f" ({adaptation['note']})"
    return line
