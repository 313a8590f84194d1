"""One typed config object for a training run, saved as ``config.yaml`` in every run folder.

``TrainConfig`` holds every setting of :func:`headstart.train`. It validates values on creation
(unknown fields and bad values raise :class:`~headstart.errors.HeadstartError` naming the field),
round-trips through YAML, and ``headstart train --config run.yaml`` reproduces a run.

Example::

    cfg = TrainConfig(data="data/", model="torchvision:mobilenet_v2", epochs=5)
    cfg.save_yaml("run.yaml")
    assert TrainConfig.from_yaml("run.yaml") == cfg
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from headstart.errors import HeadstartError

StrategyName = Literal[
    "auto", "feature-extract", "partial", "gradual", "fine-tune", "few-shot", "lora"
]
OptimizerName = Literal["adamw", "sgd"]
SchedulerName = Literal["cosine", "step", "onecycle", "none"]
AugmentName = Literal["none", "light", "standard", "strong"]
HeadName = Literal["linear", "mlp", "cosine", "semantic"]
BNPolicy = Literal["auto", "frozen", "train"]
DetectorName = Literal["faster-rcnn", "retinanet", "ssdlite"]
SegHeadName = Literal["lraspp", "deeplabv3", "fpn"]

#: the optimiser settings a ``--detector`` starts from where the run does not give them
#: (docs/detection.md, "Learning rate"): at Faster R-CNN's step both one-stage detectors found
#: the animals but not their class (val mAP@0.5 0.087 / 0.208 at AdamW 1e-3); SSDlite needed
#: AdamW 1e-2 (0.736), RetinaNet SGD 1e-2 with one warm-up epoch (0.464; 0.862 at 18 epochs)
DETECTOR_OPTIMISATION: dict[str, dict[str, Any]] = {
    "faster-rcnn": {},
    "retinanet": {"optimizer": "sgd", "lr": 1e-2, "warmup_epochs": 1.0},
    "ssdlite": {"lr": 1e-2},
}
#: the experiment trackers ``--logger`` accepts (Lightning loggers, headstart.training.trackers)
TRACKER_NAMES: tuple[str, ...] = ("csv", "tensorboard", "mlflow", "wandb")

CliGroup = Literal[
    "data", "model", "strategy", "optimisation", "augmentation", "output", "scale-out"
]
#: metrics.json keys of a multi-task split that a task (label column) may not be named
MULTI_TASK_RESERVED = frozenset(
    {"samples", "accuracy", "macro_f1", "loss", "tasks", "task_weights"}
)
#: the ``--help`` groups of ``headstart train`` / ``lr-find``, in the order they are shown
CLI_GROUPS: tuple[CliGroup, ...] = get_args(CliGroup)


@dataclass(frozen=True)
class Cli:
    """How a :class:`TrainConfig` field is set on the command line (``headstart train`` and
    ``headstart lr-find``); attached to the field's type: ``Annotated[int, Cli("model")]``.

    The option's help text is the field's ``description`` and its default the field's default.
    ``flags`` are typer parameter declarations, e.g. ``("--model", "-m")`` or, for a bool,
    ``("--strict/--skip-bad",)``; by default ``--field-name`` (bools: ``--field-name/--no-field-name``).
    """

    group: CliGroup
    flags: tuple[str, ...] = ()
    #: what ``--help`` shows for the value (default: the choices of a Literal, else ``<type>``)
    metavar: str | None = None

    def declarations(self, field: str, is_bool: bool) -> tuple[str, ...]:
        """The typer declarations of the option for ``field``."""
        if self.flags:
            return self.flags
        flag = "--" + field.replace("_", "-")
        return (f"{flag}/--no-{flag[2:]}",) if is_bool else (flag,)


class TrainConfig(BaseModel):
    """Every setting of a training run.

    Each field is also an option of ``headstart train`` and ``headstart lr-find``: its
    ``description`` is the option's help text, its default the option's default, and its
    :class:`Cli` metadata names the flag and the ``--help`` group (``headstart.cli`` builds the
    options from these fields). Descriptions speak of flags (``--adapt``) because they are the
    CLI's help; in Python the same setting is the field of that name (``adapt=``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    # --- data -------------------------------------------------------------------------------
    data: Annotated[str, Cli("data")] = Field(
        description="Image folder (class folders, or train/val/test folders of them) or CSV with "
        "path,label columns; text models: a CSV or class folders of .txt files."
    )
    val: Annotated[str | None, Cli("data")] = Field(
        None, description="Separate validation folder or CSV."
    )
    test: Annotated[str | None, Cli("data")] = Field(
        None, description="Separate test folder or CSV."
    )
    val_fraction: Annotated[float, Cli("data")] = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Stratified validation share when the data has no val split.",
    )
    images: Annotated[str | None, Cli("data", metavar="<dir>")] = Field(
        None,
        description="Detection: the folder the COCO files' image file_names are relative to "
        "(default: each JSON file's folder).",
    )
    strict: Annotated[bool, Cli("data", flags=("--strict/--skip-bad",))] = Field(
        False, description="Fail on unreadable images (--skip-bad: skip and count them)."
    )
    task: Annotated[
        Literal["auto", "single-label", "multi-label", "multi-task", "segmentation", "detection"],
        Cli("data"),
    ] = Field(
        "auto",
        description="What each example is labelled with: one class (single-label), a set of "
        "labels (multi-label: a CSV 'labels' column, labels split by --label-sep) or one class "
        "per task (multi-task: the CSV columns of --label-columns). auto: multi-task when "
        "--label-columns names several columns; multi-label when the CSV has a 'labels' column "
        "or a label cell holds the separator; segmentation when the data folder holds "
        "train/images + train/masks (segmentation: a class per pixel, docs/segmentation.md); "
        "detection when --data is a COCO .json file or a folder with train.json (boxes, "
        "docs/detection.md).",
    )
    label_columns: Annotated[list[str], Cli("data", metavar="<col,col,...>")] = Field(
        default_factory=list,
        description="Multi-task CSVs: the label columns, one task each, comma-separated (e.g. "
        "species,colour); one backbone, one head per task (docs/multitask.md).",
    )
    task_weights: Annotated[list[float], Cli("data", metavar="<w,w,...>")] = Field(
        default_factory=list,
        description="Multi-task: each task's weight in the summed loss, in --label-columns "
        "order, comma-separated (unset: 1 each).",
    )
    label_sep: Annotated[str, Cli("data")] = Field(
        "|", min_length=1, description="Multi-label CSVs: the separator between a row's labels."
    )
    text_column: Annotated[str | None, Cli("data")] = Field(
        None,
        description="Text data: the CSV column holding the texts (unset: 'text').",
    )
    label_column: Annotated[str, Cli("data")] = Field(
        "label", description="Text data: the CSV column holding the labels."
    )
    max_length: Annotated[int | None, Cli("model")] = Field(
        None,
        ge=2,
        description="Text models: tokens per text, longer ones are truncated (unset: the "
        "model's limit, at most 512).",
    )
    pooling: Annotated[Literal["mean", "cls"], Cli("model")] = Field(
        "mean", description="Text models: sentence embedding = mean over tokens or the CLS token."
    )

    # --- model ------------------------------------------------------------------------------
    model: Annotated[str, Cli("model", flags=("--model", "-m"))] = Field(
        "torchvision:mobilenet_v2",
        description="Model spec: torchvision:<name>, timm:<name>, hf:<folder or cached repo>, "
        "efficientnet-lite:<name>, text:minilm or text:<folder>.",
    )
    weights: Annotated[str, Cli("model")] = Field(
        "DEFAULT",
        description="Weights: DEFAULT, an enum name (IMAGENET1K_V1, ...), a local file, or none "
        "(random init).",
    )
    head: Annotated[HeadName, Cli("model")] = Field(
        "linear",
        description="Classifier head: linear, mlp, cosine (prototypes / CLIP text) or semantic "
        "(projection onto label-name embeddings, zero-shot to new class names).",
    )
    head_hidden: Annotated[int, Cli("model")] = Field(
        512, gt=0, description="Hidden width of the mlp head."
    )
    head_dropout: Annotated[float | None, Cli("model")] = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Head dropout (unset: 0 for the linear head, 0.2 for mlp).",
    )
    head_init: Annotated[Literal["probe", "random", "zero-shot"], Cli("model")] = Field(
        "probe",
        description="How the head starts. probe: linear head from a fitted logistic-regression "
        "probe (cached-feature path, or the backbone trains), cosine head from class-mean "
        "prototypes; random; zero-shot: cosine head from the model's text embeddings of the "
        "class names (CLIP).",
    )
    prompts: Annotated[list[str], Cli("model", flags=("--prompt",), metavar="<template>")] = Field(
        default_factory=lambda: ["a photo of a {}."],
        description="Zero-shot prompt template, '{}' = class name; repeat to ensemble "
        "(averaged); 'ensemble' = the built-in set of CLIP's 7.",
    )
    label_embeddings: Annotated[Literal["minilm"] | None, Cli("model")] = Field(
        None,
        description="--head semantic: text model mapping class names to vectors (minilm: the "
        "offline all-MiniLM-L6-v2).",
    )
    detector: Annotated[DetectorName, Cli("model")] = Field(
        "faster-rcnn",
        description="Detection: the torchvision detector on the backbone's stages: faster-rcnn "
        "(feature pyramid, region proposals, RoI heads), retinanet (feature pyramid, one stage, "
        "focal loss) or ssdlite (SSDlite head on the last two stages + 4 extra blocks); "
        "docs/detection.md. Unless given, retinanet trains with --optimizer sgd --lr 1e-2 "
        "--warmup-epochs 1 and ssdlite with --lr 1e-2.",
    )
    seg_head: Annotated[SegHeadName, Cli("model")] = Field(
        "lraspp",
        description="Segmentation: the per-pixel head on the backbone's stages: lraspp "
        "(LR-ASPP on a stride-8 stage and the last), deeplabv3 (ASPP on the last stage) or fpn "
        "(semantic FPN over the stages at strides 4-32); docs/segmentation.md.",
    )
    image_size: Annotated[int | Literal["auto"] | None, Cli("model")] = Field(
        None,
        description="Input crop size (unset: the weights' own); 'auto' shrinks it for small "
        "images.",
    )

    # --- strategy ---------------------------------------------------------------------------
    strategy: Annotated[StrategyName, Cli("strategy", flags=("--strategy", "-s"))] = Field(
        "feature-extract",
        description="Transfer strategy; auto chooses one from the data (few-shot when a class "
        "has <= 10 training images).",
    )
    unfreeze_last: Annotated[int, Cli("strategy")] = Field(
        1, ge=1, description="partial: stages trained, counted from the output."
    )
    time_budget: Annotated[float | None, Cli("strategy")] = Field(
        None,
        gt=0,
        description="auto: seconds for the whole command (imports included) within which "
        "candidate strategies are measured (unset: chosen from the data size, and printed).",
    )
    trials: Annotated[int | None, Cli("strategy")] = Field(
        None,
        ge=0,
        description="auto: at most this many trained candidates beyond the probe and "
        "feature extraction (unset: as many as --time-budget allows; without a budget, one "
        "partial, fine-tune and gradual candidate).",
    )
    lora_r: Annotated[int, Cli("strategy")] = Field(
        8, ge=1, description="lora: rank of the low-rank adapters."
    )
    lora_alpha: Annotated[int, Cli("strategy")] = Field(
        16, ge=1, description="lora: scaling alpha (update x alpha / r)."
    )
    lora_dropout: Annotated[float, Cli("strategy")] = Field(
        0.1, ge=0.0, lt=1.0, description="lora: dropout on the adapter input."
    )
    few_shot_head: Annotated[Literal["prototype", "logistic"], Cli("strategy")] = Field(
        "prototype",
        description="few-shot: cosine prototype head, or a logistic-regression probe (linear "
        "head).",
    )
    few_shot_refine: Annotated[bool, Cli("strategy")] = Field(
        True,
        description="few-shot: fine-tune the head from its closed-form start for --epochs (off: "
        "keep the prototypes / probe as they are).",
    )
    unfreeze_every: Annotated[int | None, Cli("strategy")] = Field(
        None,
        ge=1,
        description="gradual: epochs between unfreezing steps (unset: derived from --epochs so "
        "that every step happens by mid-run, while the LR is still high).",
    )
    gradual_steps: Annotated[int, Cli("strategy")] = Field(
        3,
        ge=1,
        description="gradual: unfreezing steps; the last one unfreezes all remaining stages.",
    )
    layer_decay: Annotated[float | None, Cli("optimisation")] = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Per-stage LR decay towards the input, e.g. 0.75 (unset: off).",
    )
    bn: Annotated[BNPolicy, Cli("strategy")] = Field(
        "auto",
        description="BatchNorm statistics of trainable stages: auto (frozen when the batch is "
        "< 16; updated ones get momentum >= 0.1), frozen or train (the model's own momentum).",
    )
    backbone_lr_mult: Annotated[float, Cli("optimisation")] = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Backbone LR = lr x this (discriminative learning rates).",
    )
    cache_features: Annotated[bool, Cli("strategy", flags=("--fast-path/--no-fast-path",))] = Field(
        True,
        description="Frozen backbone: compute features once and train the head on them.",
    )
    disk_cache: Annotated[bool, Cli("strategy", flags=("--cache/--no-cache",))] = Field(
        True, description="Keep extracted features on disk for later runs."
    )
    cache_activations: Annotated[bool, Cli("strategy")] = Field(
        True,
        description="With --fast-path: when the first stages stay frozen for the whole run "
        "(partial), store their output once (fp16, memory-mapped) and train the rest on it.",
    )
    cache_max_gb: Annotated[float, Cli("strategy")] = Field(
        20.0,
        gt=0.0,
        description="Largest cached-activation store (GB); a larger one trains on images.",
    )
    feature_views: Annotated[int, Cli("augmentation")] = Field(
        1,
        ge=1,
        description="Cached-feature path: views per image (1 = un-augmented; more add augmented "
        "views).",
    )
    compile: Annotated[bool, Cli("scale-out")] = Field(
        False, description="torch.compile the model body (image path)."
    )

    # --- optimisation -----------------------------------------------------------------------
    epochs: Annotated[int, Cli("optimisation", flags=("--epochs", "-e"))] = Field(
        10, ge=1, description="Maximum number of epochs."
    )
    batch_size: Annotated[int, Cli("optimisation", flags=("--batch-size", "-b"))] = Field(
        32, ge=1, description="Batch size."
    )
    optimizer: Annotated[OptimizerName, Cli("optimisation")] = Field(
        "adamw", description="Optimizer."
    )
    lr: Annotated[float, Cli("optimisation", flags=("--lr", "--lr-head"))] = Field(
        3e-3,
        gt=0.0,
        description="Learning rate of the head (--detector retinanet / ssdlite: 1e-2 unless "
        "given).",
    )
    momentum: Annotated[float, Cli("optimisation")] = Field(
        0.9, ge=0.0, lt=1.0, description="SGD momentum."
    )
    weight_decay: Annotated[float, Cli("optimisation")] = Field(
        1e-4, ge=0.0, description="Weight decay (never applied to norms and biases)."
    )
    scheduler: Annotated[SchedulerName, Cli("optimisation")] = Field(
        "cosine", description="LR schedule, updated every step."
    )
    warmup_epochs: Annotated[float, Cli("optimisation")] = Field(
        0.0, ge=0.0, description="cosine: epochs of linear warmup before the decay."
    )
    step_size: Annotated[int, Cli("optimisation")] = Field(
        7, ge=1, description="step: epochs between LR drops."
    )
    gamma: Annotated[float, Cli("optimisation")] = Field(
        0.1, gt=0.0, le=1.0, description="step: LR multiplier at each drop."
    )
    label_smoothing: Annotated[float, Cli("optimisation")] = Field(
        0.0, ge=0.0, lt=1.0, description="Label smoothing."
    )
    class_weights: Annotated[Literal["none", "auto"], Cli("optimisation")] = Field(
        "none", description="auto: loss weights inversely proportional to class frequency."
    )
    sampler: Annotated[Literal["shuffle", "balanced"], Cli("optimisation")] = Field(
        "shuffle", description="balanced: draw classes equally often (with replacement)."
    )
    mixup: Annotated[float, Cli("augmentation")] = Field(
        0.0, ge=0.0, description="MixUp alpha (0: off)."
    )
    cutmix: Annotated[float, Cli("augmentation")] = Field(
        0.0, ge=0.0, description="CutMix alpha (0: off)."
    )
    augment: Annotated[AugmentName, Cli("augmentation")] = Field(
        "light", description="Training augmentation preset."
    )
    hflip: Annotated[bool | None, Cli("augmentation")] = Field(
        None,
        description="Random horizontal flips in the augmentation presets (unset: measured "
        "with a probe on mirror images, off where they change the class: text, digits, "
        "oriented objects).",
    )
    early_stopping_patience: Annotated[int | None, Cli("optimisation", flags=("--patience",))] = (
        Field(
            5,
            ge=1,
            description="Stop after this many epochs without val-loss improvement (None / "
            "--no-early-stopping: off).",
        )
    )

    # --- domain adaptation (headstart.adapt.domain) -----------------------------------------
    target_unlabeled: Annotated[str | None, Cli("data")] = Field(
        None,
        description="Unlabeled target-domain images (folder, searched recursively) for --adapt.",
    )
    target_eval: Annotated[str | None, Cli("data")] = Field(
        None,
        description="Labelled target-domain folder/CSV: accuracy there is reported after training.",
    )
    adapt: Annotated[Literal["none", "mmd", "dann"], Cli("strategy")] = Field(
        "none",
        description="Domain adaptation with --target-unlabeled: mmd (multi-kernel MMD, DAN) or "
        "dann (gradient reversal).",
    )
    adapt_weight: Annotated[float, Cli("strategy")] = Field(
        1.0, gt=0.0, description="Weight of the adaptation loss next to cross-entropy."
    )
    adapt_baseline: Annotated[bool, Cli("strategy")] = Field(
        True,
        description="With --adapt and --target-eval, also train the run without adaptation "
        "(<run>/source-only) to report source-only vs adapted accuracy.",
    )

    # --- runtime ----------------------------------------------------------------------------
    accelerator: Annotated[str, Cli("scale-out")] = Field(
        "auto", description="cpu, cuda, mps or auto."
    )
    devices: Annotated[int, Cli("scale-out")] = Field(
        1,
        ge=1,
        description="Devices (processes) per node; > 1 trains in parallel (--strategy-dist, ddp by default).",
    )
    num_nodes: Annotated[int, Cli("scale-out")] = Field(
        1,
        ge=1,
        description="Machines taking part (torchrun/SLURM, docs/scale-out.md); > 1 needs --out "
        "on a shared disk.",
    )
    strategy_dist: Annotated[Literal["ddp", "fsdp"], Cli("scale-out")] = Field(
        "ddp",
        description="How several processes share training: ddp (replicas) or fsdp (sharded; "
        "CUDA only).",
    )
    precision: Annotated[str, Cli("scale-out")] = Field(
        "32-true",
        description="Lightning precision: 32-true, bf16-mixed, 16-mixed (also 32, bf16-true, "
        "64-true).",
    )
    num_workers: Annotated[int | None, Cli("data")] = Field(
        None, ge=0, description="DataLoader workers (unset: sized to the machine)."
    )
    seed: Annotated[int, Cli("output")] = Field(
        42, description="Random seed (splits, init, shuffling)."
    )
    deterministic: Annotated[bool, Cli("output")] = Field(
        False,
        description="Force torch deterministic algorithms (slower; CPU runs are reproducible "
        "without it).",
    )
    out: Annotated[str | None, Cli("output", flags=("--out", "-o"))] = Field(
        None, description="Run folder (unset: runs/<model>-<timestamp>)."
    )
    loggers: Annotated[
        list[str], Cli("output", flags=("--logger",), metavar="[" + "|".join(TRACKER_NAMES) + "]")
    ] = Field(
        default_factory=list,
        description="Experiment tracker(s) for headstart train, repeat for several: csv, "
        "tensorboard, mlflow, wandb (logs under the run folder; docs/tracking.md). log.csv is "
        "always written.",
    )

    @model_validator(mode="before")
    @classmethod
    def _detector_optimisation(cls, values: Any) -> Any:
        """Fill the settings :data:`DETECTOR_OPTIMISATION` gives the detector where ``values``
        leave them out; a saved config.yaml holds every field, so it loads unchanged."""
        if not isinstance(values, dict):
            return values
        return {**DETECTOR_OPTIMISATION.get(values.get("detector", "faster-rcnn"), {}), **values}

    @field_validator("loggers")
    @classmethod
    def _loggers_known(cls, v: list[str]) -> list[str]:
        unknown = [name for name in v if name not in TRACKER_NAMES]
        if unknown:
            raise ValueError(
                f"unknown tracker {', '.join(map(repr, unknown))}; choose from "
                f"{', '.join(TRACKER_NAMES)} (--logger NAME, repeat for several)"
            )
        return list(dict.fromkeys(v))  # each once, in the order given

    @field_validator("label_columns", "task_weights", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        """``"a,b"`` (the CLI's form, also repeatable) -> ``["a", "b"]``."""
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list | tuple):
            return v
        out: list[Any] = []
        for item in items:
            out += [x.strip() for x in item.split(",")] if isinstance(item, str) else [item]
        return [x for x in out if x != ""]

    @model_validator(mode="after")
    def _multi_task_settings_fit(self) -> TrainConfig:
        cols = self.label_columns
        if len(set(cols)) != len(cols):
            raise ValueError(f"label_columns names a column twice: {', '.join(cols)}")
        reserved = sorted(set(cols) & MULTI_TASK_RESERVED)
        if reserved or any(":" in c for c in cols):
            raise ValueError(
                "label_columns: a task may not be named "
                f"{', '.join(reserved) or 'with a colon'} (reserved in metrics.json / class "
                "names); rename the CSV column"
            )
        if len(cols) == 1:
            raise ValueError(
                "label_columns names one column: multi-task needs 2+ (a single-label CSV's "
                "label column is called 'label')"
            )
        if self.task == "multi-task" and len(cols) < 2:
            raise ValueError("task=multi-task needs --label-columns naming 2+ CSV columns")
        if len(cols) > 1 and self.task in ("single-label", "multi-label"):
            raise ValueError(f"label_columns names {len(cols)} columns: use task=multi-task")
        if self.task_weights and len(self.task_weights) != len(cols):
            raise ValueError(
                f"task_weights gives {len(self.task_weights)} weight(s) for {len(cols)} "
                "label column(s); give one per --label-columns entry"
            )
        if any(w < 0 for w in self.task_weights) or (
            self.task_weights and sum(self.task_weights) <= 0
        ):
            raise ValueError("task_weights must be >= 0 with a positive sum")
        return self

    @property
    def multi_task(self) -> bool:
        """Whether this run trains one head per --label-columns entry."""
        return self.task == "multi-task" or (self.task == "auto" and len(self.label_columns) > 1)

    @property
    def random_flips(self) -> bool:
        """Whether the augmentation presets flip: ``hflip`` unset (not measured, e.g. outside
        ``headstart train``) means on."""
        return self.hflip is not False

    @field_validator("model")
    @classmethod
    def _model_has_source(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError(
                f"model spec {v!r} needs a source prefix, e.g. 'torchvision:{v}' or 'timm:{v}'"
            )
        return v

    @model_validator(mode="after")
    def _head_settings_fit(self) -> TrainConfig:
        if self.label_embeddings is not None and self.head != "semantic":
            raise ValueError("label_embeddings needs head=semantic (--head semantic)")
        if self.head == "semantic" and self.label_embeddings is None:
            raise ValueError(
                "head=semantic needs label_embeddings (--label-embeddings minilm) to embed class names"
            )
        if self.head_init == "zero-shot" and self.head != "cosine":
            raise ValueError("head_init=zero-shot needs head=cosine (--head cosine)")
        if self.detector != "faster-rcnn" and self.task not in ("auto", "detection"):
            raise ValueError(f"detector={self.detector} is for task=detection, not {self.task}")
        if self.seg_head != "lraspp" and self.task not in ("auto", "segmentation"):
            raise ValueError(f"seg_head={self.seg_head} is for task=segmentation, not {self.task}")
        return self

    def optimisation_reason(self) -> str:
        """Why a detection run's optimiser settings are what they are (the plan prints it)."""
        recipe = DETECTOR_OPTIMISATION.get(self.detector, {})
        settings = f"{self.optimizer} lr {self.lr:g}" + (
            f", {self.warmup_epochs:g} warm-up epoch(s)" if self.warmup_epochs else ""
        )
        if recipe and all(getattr(self, k) == v for k, v in recipe.items()):
            return (
                f"{settings}: the {self.detector} default (one-stage detectors need ~10x Faster "
                "R-CNN's step to learn the classes; docs/detection.md)"
            )
        return f"{settings}: as given" if recipe else f"{settings}"

    @model_validator(mode="after")
    def _adaptation_settings_fit(self) -> TrainConfig:
        if self.adapt != "none" and not self.target_unlabeled:
            raise ValueError(
                f"adapt={self.adapt} needs target_unlabeled (--target-unlabeled <folder>)"
            )
        if self.target_unlabeled and self.adapt == "none":
            raise ValueError("target_unlabeled is used only with adapt=mmd or dann (--adapt)")
        return self

    def head_for(self, strategy: str) -> str:
        """The head kind a run with ``strategy`` (the resolved one, not ``auto``) trains:
        few-shot brings its own (cosine prototypes, or a linear logistic probe)."""
        if self.task == "segmentation":
            return "dense"  # a per-pixel head on two stages (models/dense_heads.py)
        if self.task == "detection":
            return "detection"  # Faster R-CNN + FPN on the last stages (models/detection_heads.py)
        if strategy == "few-shot" and self.head in ("linear", "mlp"):
            return "cosine" if self.few_shot_head == "prototype" else "linear"
        return self.head

    @field_validator("precision")
    @classmethod
    def _precision_known(cls, v: str) -> str:
        known = {"32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true"}
        if v not in known:
            raise ValueError(f"precision {v!r} is not one of {sorted(known)}")
        return v

    # --- construction helpers ----------------------------------------------------------------
    @classmethod
    def create(cls, **values: Any) -> TrainConfig:
        """Validate ``values``; bad fields raise :class:`HeadstartError` naming each field."""
        try:
            return cls(**values)
        except ValidationError as err:
            raise HeadstartError(_describe_validation_error(err)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load a config saved by a run; ``overrides`` replace values from the file."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HeadstartError(f"config file {path} does not exist") from None
        except yaml.YAMLError as err:
            raise HeadstartError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise HeadstartError(f"config file {path} must hold a mapping of field: value")
        try:
            return cls(**_follow_detector(raw, overrides))
        except ValidationError as err:
            raise HeadstartError(f"config file {path}: {_describe_validation_error(err)}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated; the fields counted as given
        (``model_fields_set``) are this config's and the changed ones."""
        copy = TrainConfig.create(**_follow_detector(self.model_dump(), changes))
        copy.__pydantic_fields_set__ = set(self.model_fields_set) | set(changes)
        return copy


def _follow_detector(saved: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with ``changes`` applied; where ``changes`` switch the detector, the saved
    settings that were the old detector's defaults (:data:`DETECTOR_OPTIMISATION`) are left to
    the new detector's, so ``--config run.yaml --detector ssdlite`` trains as ``--detector
    ssdlite`` would."""
    out = {**saved, **changes}
    old = saved.get("detector", "faster-rcnn")
    if changes.get("detector", old) == old:
        return out
    keys = {k for recipe in DETECTOR_OPTIMISATION.values() for k in recipe}
    old_defaults = {k: TrainConfig.model_fields[k].default for k in keys}
    old_defaults.update(DETECTOR_OPTIMISATION.get(old, {}))
    for k in keys - changes.keys():
        if k in out and out[k] == old_defaults[k]:
            del out[k]
    return out


def _describe_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling; see `headstart train --help`)"
        parts.append(f"{field}: {msg}")
    return "invalid settings — " + "; ".join(parts)
