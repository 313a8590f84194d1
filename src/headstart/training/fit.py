"""``train``: resolve the run -> plan -> loaders -> trainer -> fit -> summarise.

Each stage is a public function of its own module (:mod:`~headstart.training.plan`,
:mod:`~headstart.training.loaders`, :mod:`~headstart.training.trainer`,
:mod:`~headstart.training.summary`); lr-find and pretext training reuse them. Optional
additions (domain adaptation) come in as :mod:`~headstart.training.plugins`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from headstart.config import TrainConfig
from headstart.console import setup_logging
from headstart.errors import RunError
from headstart.models.heads import DENSE_HEADS, head_kind
from headstart.models.weights_spec import is_random_init
from headstart.run import RunFolder
from headstart.strategies.auto import AutoDecision, is_few_shot
from headstart.tasks import task_for
from headstart.training.callbacks import NonFiniteLossGuard
from headstart.training.checkpoint_io import check_checkpoint_fits
from headstart.training.distributed import (
    announce_run_dir,
    check_distributed,
    rank_run_dir,
    world_size,
)
from headstart.training.features import FeatureSource
from headstart.training.plugins import PluginFactory, ResultContext
from headstart.training.prepare import (
    Inputs,
    Prepared,
    class_table,
    fit,
    load_inputs,
    prepare,
    with_backbone,
)
from headstart.training.search import (
    Selection,
    adopt_checkpoints,
    choose,
    load_selection,
    print_selection,
)
from headstart.training.summary import Finished, best_model, evaluate_best, run_block, write_summary
from headstart.training.trainer import make_trainer

__all__ = [
    "Inputs",
    "Prepared",
    "TrainResult",
    "class_table",
    "load_inputs",
    "prepare",
    "resolve_run",
    "train",
]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, the config used and the final metrics."""

    run_dir: Path
    config: TrainConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def val_accuracy(self) -> float:
        """Val accuracy of a run whose task reports one (single-label and multi-task runs);
        other tasks' numbers are in :attr:`metrics` (``val.map``, ``val.miou``, ...)."""
        val = self.metrics.get("val", {})
        if "accuracy" not in val:
            keys = ", ".join(f"val.{k}" for k in val if not isinstance(val[k], dict | list))
            raise AttributeError(
                "this run's task reports no val accuracy; its val metrics are "
                f"{keys or 'not written'} (in TrainResult.metrics)"
            )
        return float(val["accuracy"])

    @property
    def best_checkpoint(self) -> Path:
        return RunFolder(self.run_dir).checkpoint_for_inference()


def resolve_run(
    config: TrainConfig | None, resume: str | Path | None, overrides: dict[str, Any]
) -> tuple[TrainConfig, RunFolder | None, Path | None]:
    """``(config, run folder or None for a new run, checkpoint to resume from)``; ``--resume``
    continues a run exactly as configured and refuses changed settings."""
    if resume is None:
        if config is not None:
            return config.replace(**overrides), None, None
        return TrainConfig.create(**overrides), None, None
    run = RunFolder.open(resume)
    saved = run.load_config()
    changed = sorted(k for k, v in overrides.items() if getattr(saved, k, None) != v)
    if config is not None:
        changed += [
            k
            for k in TrainConfig.model_fields
            if getattr(config, k) != getattr(saved, k) and k not in changed
        ]
    if changed:
        raise RunError(
            f"--resume {resume} continues the run exactly as configured in its config.yaml "
            f"(model {saved.model}); it cannot change {', '.join(changed)}. Start a new run "
            "(e.g. --config runs/<run>/config.yaml --out <new folder>) instead."
        )
    run.remove_stale_temp_files()  # left by a process killed while writing
    if run.last_checkpoint.is_file() and finished(run, saved.epochs):
        log.warning(
            "--resume %s: this run already finished (metrics.json written); nothing is trained: "
            "the best checkpoint is evaluated again and metrics.json and the report rewritten. "
            "To train longer, start a new run: --config %s --epochs N --out <new folder>",
            resume, run.config_path,
        )  # fmt: skip
    if run.last_checkpoint.is_file():
        return saved, run, run.last_checkpoint
    log.warning("--resume %s: no checkpoint yet; training from the first epoch", resume)
    return saved, run, None


def finished(run: RunFolder, epochs: int) -> bool:
    """Whether ``run`` trained all its ``epochs`` (one log.csv row each) and was evaluated."""
    if not (run.metrics_path.is_file() and run.log_path.is_file()):
        return False
    rows = run.log_path.read_text(encoding="utf-8").strip().splitlines()[1:]
    return len(rows) >= epochs


def open_run_folder(
    config: TrainConfig, resumed: RunFolder | None, classes: list[str]
) -> RunFolder:
    """The run folder: the resumed one (its classes must match), the one rank 0 created (other
    DDP ranks), or a new one with config.yaml and classes.json."""
    if resumed is not None:
        if resumed.load_classes() != classes:
            raise RunError(
                f"--resume {resumed.path}: the data's classes differ from the run's classes.json"
            )
        return resumed
    shared_dir = rank_run_dir(config)
    if shared_dir is not None:  # a DDP/FSDP rank other than 0 (see training/distributed.py)
        return RunFolder(shared_dir)
    run = RunFolder.create(config.out or RunFolder.default_path(config))
    run.save_config(config)
    run.save_classes(classes)
    announce_run_dir(run.path)  # inherited by the ranks Lightning's launcher starts
    return run


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    plugins: Sequence[PluginFactory] = (),
    **overrides: Any,
) -> TrainResult:
    """Train a model as described by ``config`` (or keyword settings) and evaluate it.

    This is the training core; :func:`headstart.train` calls it with the library's plug-ins
    (domain adaptation) — use that one. ``extra_callbacks`` are added to the Lightning Trainer;
    ``resume="runs/x"`` continues an interrupted run from its ``last.ckpt`` with its own
    config, and the result equals an uninterrupted run.
    """
    setup_logging()
    t_start = time.perf_counter()
    config, resumed, ckpt_path = resolve_run(config, resume, overrides)
    check_distributed(config)
    inputs = load_inputs(config)
    # resolved (auto) and checked against the settings; saved: predict/evaluate read the task
    config = config.replace(task=task_for(config, inputs.splits.multi_label).name)
    run = open_run_folder(config, resumed, inputs.splits.classes)
    selection, searched = auto_selection(config, inputs, run, plugins)
    trained = config.replace(**selection.overrides()) if selection else config
    if trained.model != config.model:  # auto compared backbones and kept another one
        config, inputs = config.replace(model=trained.model), with_backbone(inputs, trained)
        run.save_config(config)  # predict, export and --resume rebuild the kept backbone
    adopted = selection is not None and selection.reusable  # the winner's weights: no training
    p = prepare(trained, inputs, plugins, searched, train=not adopted)
    if selection is not None:
        probe = selection.candidates[0].score
        numbers = {"probe_accuracy": probe, "selection_accuracy": selection.chosen.score}
        p.plan.decision = AutoDecision(selection.chosen.strategy, selection.reasons, numbers)
    if ckpt_path is not None:
        check_checkpoint_fits(ckpt_path, p.module, config.model)
    if selection is not None and adopted:
        # the winner trained on exactly these splits: its checkpoints are the run's
        adopt_checkpoints(Path(selection.chosen.folder or ""), run)
        epochs_run, global_zero = selection.chosen.epochs_run, True
    else:
        trainer = make_trainer(
            trained, run.path, steps_per_epoch=len(p.loaders.train), checkpoints=run.checkpoints,
            log_csv=run.log_path, callbacks=[NonFiniteLossGuard(), *extra_callbacks],
            trackers=True,
        )  # fmt: skip
        fit(trainer, p, run, ckpt_path)
        epochs_run, global_zero = trainer.current_epoch, trainer.is_global_zero
    if not global_zero:
        return TrainResult(run.path, config, {}, time.perf_counter() - t_start)
    done = Finished(
        trained, run, inputs.splits, inputs.backbone, p.module, p.plan, p.loaders,
        inputs.modality, p.module.task, epochs_run, p.features.cache_hits,
    )  # fmt: skip
    model = best_model(done)
    results, val_logits, val_targets = evaluate_best(done, model)
    results["run"] = run_block(done, time.perf_counter() - t_start)
    if selection is not None:
        results["run"]["auto"] = selection.to_dict()
    ctx = ResultContext(
        trained, model, inputs.splits, run, p.plan.cached_features, p.plan.num_workers
    )
    for plugin in p.plugins:
        results.update(plugin.results(ctx))
    write_summary(done, results, val_logits, val_targets)
    return TrainResult(run.path, config, results, results["run"]["seconds"])


def auto_selection(
    config: TrainConfig, inputs: Inputs, run: RunFolder, plugins: Sequence[PluginFactory]
) -> tuple[Selection | None, FeatureSource | None]:
    """For ``--strategy auto``: the measured selection (the saved one on ``--resume``), or
    ``None`` where the static rules decide (few-shot data; several processes); and the
    search's remembered features of the kept (pretrained) backbone for the final run."""
    if config.strategy != "auto" or is_few_shot(inputs.splits.counts()["train"]):
        return None, None
    if not inputs.splits.single_label:  # the search's probe fits one softmax over the classes
        return None, None  # multi-label and multi-task use the static rules
    if head_kind(inputs.backbone.head) in DENSE_HEADS:
        return None, None  # the search's probe reads pooled features: dense tasks use the rules
    if world_size(config) > 1:
        return None, None  # the search runs in one process; DDP runs use the static rules
    selection, features = load_selection(run), None
    if selection is None:
        selection, features = choose(config, inputs, run, plugins)
    print_selection(selection)
    if is_random_init(inputs.backbone.weights_label):
        features = None  # as between candidates: random weights are not shared
    return selection, features
