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

from pathlib import Path
from typing import Any, Literal

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


class TrainConfig(BaseModel):
    """Every setting of a training run. Field docs are the CLI's help texts."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    # --- data -------------------------------------------------------------------------------
    data: str = Field(
        description="Image folder (ImageFolder layout) or CSV with path,label columns."
    )
    val: str | None = Field(None, description="Separate validation folder or CSV.")
    test: str | None = Field(None, description="Separate test folder or CSV.")
    val_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Stratified validation share when data has no val split."
    )
    strict: bool = Field(False, description="Fail on unreadable images instead of skipping them.")
    text_column: str | None = Field(
        None,
        description="Text data: the CSV column holding the texts (default 'text' for text models).",
    )
    label_column: str = Field("label", description="Text data: the CSV column holding the labels.")
    max_length: int | None = Field(
        None,
        ge=2,
        description="Text models: tokens per text, longer ones are truncated [model's limit, at most 512].",
    )
    pooling: Literal["mean", "cls"] = Field(
        "mean", description="Text models: sentence embedding = mean over tokens or the CLS token."
    )

    # --- model ------------------------------------------------------------------------------
    model: str = Field(
        "torchvision:mobilenet_v2", description="Model spec: torchvision:<name> or timm:<name>."
    )
    weights: str = Field(
        "DEFAULT",
        description="Weights enum name (DEFAULT, IMAGENET1K_V1, ...), a local file, or 'none'.",
    )
    head: HeadName = Field(
        "linear",
        description="Classifier head: linear, mlp, cosine (prototypes / CLIP text) or semantic "
        "(projection onto label-name embeddings, zero-shot to new class names).",
    )
    head_hidden: int = Field(512, gt=0, description="Hidden width of the mlp head.")
    head_dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Head dropout (default: 0 for linear, 0.2 for mlp)."
    )
    head_init: Literal["probe", "random", "zero-shot"] = Field(
        "probe",
        description="Cached-feature path: start the linear head from a fitted logistic-regression "
        "probe (cosine head: from class-mean prototypes); zero-shot: cosine head from the model's "
        "text embeddings of the class names (CLIP).",
    )
    prompts: list[str] = Field(
        default_factory=lambda: ["a photo of a {}."],
        description="Zero-shot prompt templates ('{}' = class name); several are averaged "
        "(prompt ensembling); ['ensemble'] uses the built-in set.",
    )
    label_embeddings: Literal["minilm"] | None = Field(
        None,
        description="Semantic head: text model mapping class names to vectors (minilm: the "
        "offline all-MiniLM-L6-v2).",
    )
    image_size: int | Literal["auto"] | None = Field(
        None,
        description="Input crop size; default the weights' own; 'auto' shrinks it for small images.",
    )

    # --- strategy ---------------------------------------------------------------------------
    strategy: StrategyName = Field("feature-extract", description="Transfer strategy.")
    unfreeze_last: int = Field(1, ge=1, description="Stages trained by the partial strategy.")
    lora_r: int = Field(8, ge=1, description="lora: rank of the low-rank adapters.")
    lora_alpha: int = Field(16, ge=1, description="lora: scaling alpha (update x alpha / r).")
    lora_dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="lora: dropout on the adapter input."
    )
    few_shot_head: Literal["prototype", "logistic"] = Field(
        "prototype",
        description="few-shot: cosine prototype head, or a logistic-regression probe (linear head).",
    )
    few_shot_refine: bool = Field(
        True,
        description="few-shot: fine-tune the head from its initialisation for --epochs (off: keep "
        "the prototypes / probe as they are).",
    )
    unfreeze_every: int = Field(2, ge=1, description="gradual: epochs between unfreezing steps.")
    gradual_steps: int = Field(
        3,
        ge=1,
        description="gradual: unfreezing steps; the last one unfreezes all remaining stages.",
    )
    layer_decay: float | None = Field(
        None, gt=0.0, le=1.0, description="Per-stage LR decay towards the input (e.g. 0.75)."
    )
    bn: BNPolicy = Field(
        "auto",
        description="BatchNorm statistics of trainable stages: auto (frozen when batch < 16), frozen, train.",
    )
    backbone_lr_mult: float = Field(
        0.1, gt=0.0, le=1.0, description="Backbone LR = lr x this (discriminative learning rates)."
    )
    cache_features: bool = Field(
        True,
        description="With a frozen backbone, compute features once and train the head on them.",
    )
    disk_cache: bool = Field(True, description="Keep extracted features on disk for later runs.")
    feature_views: int = Field(
        1,
        ge=1,
        description="Cached path: views per image (1 = un-augmented; more add augmented views).",
    )
    compile: bool = Field(False, description="torch.compile the model (image path).")

    # --- optimisation -----------------------------------------------------------------------
    epochs: int = Field(10, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(32, ge=1, description="Batch size.")
    optimizer: OptimizerName = Field("adamw", description="Optimizer.")
    lr: float = Field(3e-3, gt=0.0, description="Learning rate of the head.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(
        1e-4, ge=0.0, description="Weight decay (never applied to norms and biases)."
    )
    scheduler: SchedulerName = Field("cosine", description="LR schedule (per step).")
    warmup_epochs: float = Field(0.0, ge=0.0, description="Linear warmup before cosine decay.")
    step_size: int = Field(7, ge=1, description="StepLR: epochs between LR drops.")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="StepLR: LR multiplier at each drop.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing.")
    class_weights: Literal["none", "auto"] = Field(
        "none", description="auto: loss weights inversely proportional to class frequency."
    )
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle", description="balanced: draw classes equally often (with replacement)."
    )
    mixup: float = Field(0.0, ge=0.0, description="MixUp alpha (0: off).")
    cutmix: float = Field(0.0, ge=0.0, description="CutMix alpha (0: off).")
    augment: AugmentName = Field("light", description="Training augmentation preset.")
    early_stopping_patience: int | None = Field(
        5, ge=1, description="Stop after this many epochs without val-loss improvement (None: off)."
    )

    # --- domain adaptation (headstart.adapt.domain) -----------------------------------------
    target_unlabeled: str | None = Field(
        None,
        description="Unlabeled target-domain images (folder, searched recursively) for --adapt.",
    )
    target_eval: str | None = Field(
        None,
        description="Labelled target-domain folder/CSV: accuracy there is reported after training.",
    )
    adapt: Literal["none", "mmd", "dann"] = Field(
        "none",
        description="Domain adaptation with --target-unlabeled: mmd (multi-kernel MMD, DAN) or "
        "dann (gradient reversal).",
    )
    adapt_weight: float = Field(
        1.0, gt=0.0, description="Weight of the adaptation loss next to cross-entropy."
    )
    adapt_baseline: bool = Field(
        True,
        description="With --adapt and --target-eval, also train the run without adaptation "
        "(<run>/source-only) to report source-only vs adapted accuracy.",
    )

    # --- runtime ----------------------------------------------------------------------------
    accelerator: str = Field("auto", description="cpu, cuda, mps or auto.")
    devices: int = Field(1, ge=1, description="Devices (processes) per node; > 1 trains with DDP.")
    num_nodes: int = Field(
        1,
        ge=1,
        description="Machines taking part (torchrun/SLURM); > 1 needs --out on a shared disk.",
    )
    strategy_dist: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="How several processes share training: ddp (replicas) or fsdp (sharded; CUDA only).",
    )
    precision: str = Field(
        "32-true", description="Lightning precision (32-true, bf16-mixed, 16-mixed)."
    )
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader workers (default: sized to the machine)."
    )
    seed: int = Field(42, description="Random seed (splits, init, shuffling).")
    deterministic: bool = Field(
        False,
        description="Force torch deterministic algorithms (slower; CPU runs are reproducible without it).",
    )
    out: str | None = Field(None, description="Run folder (default runs/<model>-<timestamp>).")

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
        return self

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
        raw.update(overrides)
        try:
            return cls(**raw)
        except ValidationError as err:
            raise HeadstartError(f"config file {path}: {_describe_validation_error(err)}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated."""
        return TrainConfig.create(**{**self.model_dump(), **changes})


def _describe_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling; see `headstart train --help`)"
        parts.append(f"{field}: {msg}")
    return "invalid settings — " + "; ".join(parts)
