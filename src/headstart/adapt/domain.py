"""Unsupervised domain adaptation inside the ordinary trainer: MMD (DAN) and DANN.

``headstart train source/ --target-unlabeled target/ --adapt mmd|dann`` trains on labelled source
images while every training batch also carries a batch of unlabeled target images. Both pass
through the model together; the classification loss uses the source half, and an adaptation loss
pulls the two halves' *representation* together:

    L = CE(source logits, source labels) + adapt_weight * L_adapt(z_source, z_target)

The representation ``z`` is the input of the head's output layer: the hidden layer of
``--head mlp``, or the backbone's pooled features for ``--head linear``. Something below the
classifier must train for the adaptation loss to act, so

* ``--head mlp`` with a frozen backbone (``feature-extract``) adapts the head's hidden layer on
  cached features: the fast default — source and target features are computed once;
* any strategy that trains backbone stages (``partial``, ``gradual``, ``fine-tune``) adapts the
  backbone too; with ``gradual``, the backbone joins when its stages unfreeze. Where the first
  stages stay frozen throughout (``partial``), their output is stored once for the source and
  the target images (cached activations) and the upper stages train on it; otherwise on images;
* BatchNorm of trainable stages sees each step's source and target batch together (one forward
  pass, as in Ganin et al.'s and the Transfer-Learning-Library's DANN), so its batch and running
  statistics are those of the two domains mixed (the source-only baseline's are the source's
  alone). Chosen over domain-specific statistics: one model, normalised the same way for both
  domains in training and at inference (no domain switch in predict/export), and its running
  statistics include the target domain it is applied to;
* ``--head linear`` with a backbone frozen for the whole run is refused (nothing to adapt).

Checkpoint selection uses the labelled *source* validation split only: target labels are never
used for training or model selection. ``--target-eval`` (labelled target data) is evaluated after
training; with ``--adapt`` the same run is also trained without adaptation (``<run>/source-only``,
``adapt_baseline``) so metrics.json and report.html show source-only vs adapted accuracy.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from headstart.data import build_eval_transform, build_train_transform
from headstart.data.datasets import ImageDataset
from headstart.data.folders import Sample, load_source
from headstart.errors import DataError, HeadstartError
from headstart.files import collect_images
from headstart.models.heads import classifier_layer
from headstart.training.plugins import ResultContext, SetupContext, TrainingPlugin

if TYPE_CHECKING:
    from headstart.config import TrainConfig
    from headstart.data import DataSplits
    from headstart.models.backbone import Backbone
    from headstart.run import RunFolder
    from headstart.training.activations import ActivationPlan

log = logging.getLogger(__name__)

UNLABELED = "<unlabeled>"  # label of target-domain samples; maps to target index -1


# --- losses ------------------------------------------------------------------------------------
class MultiKernelMMD(nn.Module):
    r"""Squared maximum mean discrepancy with a multi-kernel Gaussian (DAN).

    Long, Cao, Wang, Jordan, "Learning Transferable Features with Deep Adaptation Networks",
    ICML 2015. For source features :math:`s_1..s_n` and target features :math:`t_1..t_m`:

    .. math::

        \mathrm{MMD}^2_k(S, T) = \frac{1}{n^2}\sum_{i,j} k(s_i, s_j)
            + \frac{1}{m^2}\sum_{i,j} k(t_i, t_j) - \frac{2}{nm}\sum_{i,j} k(s_i, t_j),

        k(x, y) = \frac{1}{|\Gamma|}\sum_{\gamma \in \Gamma}
            \exp\!\Big(-\frac{\lVert x - y\rVert^2}{2\,\gamma\,\bar\sigma^2}\Big),

    with :math:`\bar\sigma^2` the mean squared distance over all pairs of the joint batch (the
    bandwidth heuristic, treated as a constant: no gradient flows through it) and
    :math:`\Gamma = \{2^{-3}, \dots, 2^{1}\}` by default. This is the (biased, quadratic-time)
    V-statistic: exactly 0 for identical samples and >= 0 always, since ``k`` is a positive
    definite kernel. DAN weights its kernels by a learned :math:`\beta`; equal weights are the
    common simplification (as in the Transfer-Learning-Library).
    """

    def __init__(self, multipliers: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)) -> None:
        super().__init__()
        if not multipliers or min(multipliers) <= 0:
            raise ValueError("kernel bandwidth multipliers must be positive")
        self.multipliers = tuple(float(g) for g in multipliers)

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, progress: float = 0.0
    ) -> torch.Tensor:
        """MMD² between the rows of ``source`` (n, d) and ``target`` (m, d); ``progress`` is
        unused (same call signature as :class:`DomainAdversarialLoss`)."""
        n = source.shape[0]
        z = torch.cat([source, target]).float()
        d2 = torch.cdist(z, z).pow(2)
        bandwidth = d2.detach().sum() / max(1, z.shape[0] ** 2 - z.shape[0])
        bandwidth = bandwidth.clamp(min=1e-12)
        k = sum(torch.exp(-d2 / (2.0 * g * bandwidth)) for g in self.multipliers)
        assert isinstance(k, torch.Tensor)
        k = k / len(self.multipliers)
        return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by ``-lam`` (Ganin et al.)."""
    out: torch.Tensor = _GradientReversal.apply(x, lam)
    return out


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """The DANN adaptation factor :math:`\\lambda_p = 2 / (1 + \\exp(-\\gamma p)) - 1`, rising
    from 0 at the start of training (``progress`` p = 0) to ~1 at the end (p = 1)."""
    p = min(1.0, max(0.0, progress))
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainAdversarialLoss(nn.Module):
    r"""Domain-adversarial loss with a gradient reversal layer (DANN).

    Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand, Lempitsky,
    "Domain-Adversarial Training of Neural Networks", JMLR 17(59), 2016. A domain discriminator
    :math:`D` (here Linear-ReLU-Linear-ReLU-Linear) classifies features as source (1) or target
    (0):

    .. math::

        L_d = \frac{1}{n+m}\Big(\sum_i \mathrm{BCE}(D(R_\lambda(s_i)), 1)
            + \sum_j \mathrm{BCE}(D(R_\lambda(t_j)), 0)\Big)

    :math:`R_\lambda` is the gradient reversal layer: identity forward, gradient times
    :math:`-\lambda` backward. Minimising :math:`L_d` therefore trains :math:`D` to separate the
    domains while the feature extractor receives :math:`-\lambda\,\partial L_d/\partial z`, i.e.
    learns features the discriminator cannot separate (the saddle point of the paper's
    objective). :math:`\lambda_p = 2/(1+\exp(-10p)) - 1` with p the training progress in [0, 1]
    (:func:`dann_lambda`), which suppresses the noisy discriminator signal early in training.
    """

    def __init__(self, in_features: int, hidden: int = 256) -> None:
        super().__init__()
        self.discriminator = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )
        self.last_domain_accuracy = float("nan")

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, progress: float = 1.0
    ) -> torch.Tensor:
        """:math:`L_d` for ``source`` (n, d) and ``target`` (m, d) at training ``progress``."""
        z = grad_reverse(torch.cat([source, target]), dann_lambda(progress))
        logits = self.discriminator(z.float()).squeeze(1)
        labels = torch.cat([logits.new_ones(source.shape[0]), logits.new_zeros(target.shape[0])])
        with torch.no_grad():
            self.last_domain_accuracy = float(((logits > 0).float() == labels).float().mean())
        return F.binary_cross_entropy_with_logits(logits, labels)


def make_adaptation_loss(method: str, in_features: int) -> nn.Module:
    """The loss module for ``--adapt`` (``mmd`` or ``dann``)."""
    if method == "mmd":
        return MultiKernelMMD()
    if method == "dann":
        return DomainAdversarialLoss(in_features)
    raise ValueError(f"unknown adaptation method {method!r} (mmd or dann)")


# --- the training-step hook ----------------------------------------------------------------------
class DomainAdaptationStep(nn.Module):
    """Called by :class:`~headstart.training.module.HeadstartModule` for each training batch
    ``{"source": (x, y), "target": (x, _)}``; returns ``(loss, source logits, source labels,
    extra logs)``. A module, so the DANN discriminator lives in the checkpoint and trains in the
    optimizer's first parameter group (``adapt``)."""

    def __init__(self, method: str, in_features: int, weight: float) -> None:
        super().__init__()
        self.method = method
        self.weight = weight
        self.loss = make_adaptation_loss(method, in_features)

    def forward(  # type: ignore[override]
        self, module: Any, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float | torch.Tensor]]:
        if not isinstance(batch, dict):  # source batches alone (e.g. lr-find): no adaptation
            x, y = batch
            logits = module(x)
            return F.cross_entropy(logits, y), logits, y, {}
        xs, ys = batch["source"]
        xt = batch["target"][0]
        n = xs.shape[0]
        captured: list[torch.Tensor] = []
        layer = classifier_layer(module.backbone.head)
        handle = layer.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
        try:
            logits = module(torch.cat([xs, xt]))
        finally:
            handle.remove()
        z = captured[-1].flatten(1)
        weights = module.class_weights if isinstance(module.class_weights, torch.Tensor) else None
        ce = F.cross_entropy(
            logits[:n], ys, weight=weights, label_smoothing=module.config.label_smoothing
        )
        # training progress p in [0, 1]: optimizer steps so far / all steps of the run (per
        # process under DDP); restored with global_step on resume
        total = max(1, int(module.trainer.estimated_stepping_batches))
        progress = min(1.0, module.global_step / total)
        adapt = self.loss(z[:n], z[n:], progress)
        extra: dict[str, float | torch.Tensor] = {"adapt_loss": adapt.detach()}
        if isinstance(self.loss, DomainAdversarialLoss):
            extra["domain_acc"] = self.loss.last_domain_accuracy
            extra["dann_lambda"] = dann_lambda(progress)
        return ce + self.weight * adapt, logits[:n], ys, extra


# --- data ----------------------------------------------------------------------------------------
class TargetSampler(Sampler[tuple[int, int]]):
    """``rows`` draws per epoch from ``n`` target items — seeded permutations of the target set
    repeated as needed — as ``(index, epoch)`` keys, so every source batch is paired with a
    target batch of the same size and a resumed run draws the same pairs."""

    def __init__(self, n: int, rows: int, seed: int) -> None:
        self.n, self.rows, self.seed, self.epoch = n, rows, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        out: list[int] = []
        k = 0
        while len(out) < self.rows:
            g = torch.Generator().manual_seed(self.seed * 100_019 + self.epoch * 1_009 + k)
            out.extend(torch.randperm(self.n, generator=g).tolist())
            k += 1
        return iter((i, self.epoch) for i in out[: self.rows])

    def __len__(self) -> int:
        return self.rows


def unlabeled_samples(folder: str | Path, what: str = "--target-unlabeled") -> list[Sample]:
    """Every image below ``folder`` (flat or class folders: any labels are ignored)."""
    try:
        files = collect_images([folder])
    except DataError:
        raise DataError(
            f"{what} {folder}: no image files found (give a folder of images, searched recursively)"
        ) from None
    return [Sample(f, UNLABELED) for f in files]


@dataclass
class Adaptation:
    """What :func:`setup_adaptation` gives the trainer: the step hook and the target loader."""

    step: DomainAdaptationStep
    target_loader: DataLoader[Any]
    target_images: int
    representation: str

    def combine(self, source_loader: DataLoader[Any]) -> Any:
        """Source and target batches drawn together (Lightning ``CombinedLoader``)."""
        from lightning.pytorch.utilities import CombinedLoader

        return CombinedLoader(
            {"source": source_loader, "target": self.target_loader}, mode="min_size"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.step.method,
            "weight": self.step.weight,
            "target_unlabeled_images": self.target_images,
            "representation": self.representation,
        }


def check_adaptable(config: TrainConfig, frozen_throughout: bool) -> str:
    """Which representation ``--adapt`` acts on; refuses a setup with nothing trainable below
    the classifier."""
    if config.mixup or config.cutmix:
        raise HeadstartError(
            "--adapt cannot be combined with --mixup/--cutmix (mixed source labels); drop one"
        )
    if config.head == "mlp":
        where = "the mlp head's hidden layer"
        return where + ("" if frozen_throughout else " and the trainable backbone stages")
    if frozen_throughout:
        raise HeadstartError(
            f"--adapt {config.adapt} with --head {config.head} and a backbone frozen for the whole "
            "run has nothing trainable below the classifier to adapt. Use --head mlp (adapts its "
            "hidden layer; fast, on cached features) or a strategy that trains backbone stages "
            "(--strategy partial/gradual/fine-tune)."
        )
    return "backbone features (input of the classifier)"


def setup_adaptation(
    config: TrainConfig,
    backbone: Backbone,
    *,
    fast: bool,
    frozen_throughout: bool,
    rows: int,
    drop_last: bool,
    loader_kw: dict[str, Any],
    num_workers: int,
    activations: ActivationPlan | None = None,
) -> Adaptation:
    """Target data (cached features on the fast path, the frozen prefix's stored output on the
    cached-activation path, augmented images otherwise) and the training-step hook for
    ``config.adapt``."""
    from headstart.data.datasets import IndexedTensors
    from headstart.training.features import features_for

    assert config.target_unlabeled is not None
    where = check_adaptable(config, frozen_throughout)
    samples = unlabeled_samples(config.target_unlabeled)
    idx = {UNLABELED: -1}
    draft = backbone.preprocessing.resize
    if fast:
        base = ImageDataset(
            samples, idx, build_eval_transform(backbone.preprocessing), draft, seed=config.seed
        )
        x, y, _ = features_for(
            backbone, base, samples, idx, split="target-unlabeled", seed=config.seed,
            use_disk_cache=config.disk_cache, num_workers=num_workers,
        )  # fmt: skip
        dataset: Any = IndexedTensors(x, y)
    elif activations is not None:
        dataset = target_activations(config, backbone, activations, samples, num_workers)
        where += f" (stages from {backbone.stages[activations.cut].name} on cached activations)"
    else:
        tf = build_train_transform(backbone.preprocessing, config.augment, config.random_flips)
        dataset = ImageDataset(samples, idx, tf, draft, seed=config.seed + 1)
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=TargetSampler(len(samples), rows, config.seed + 1),
        drop_last=drop_last,
        **loader_kw,
    )
    in_features = classifier_layer(backbone.head).in_features
    # the discriminator's initial weights from the run's seed alone, not from how much of the
    # global random stream data loading used up before (cached features/activations or none)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        step = DomainAdaptationStep(config.adapt, in_features, config.adapt_weight)
    log.info("domain adaptation %s on %s, %d target images", config.adapt, where, len(samples))
    return Adaptation(step, loader, len(samples), where)


def target_activations(
    config: TrainConfig,
    backbone: Backbone,
    plan: ActivationPlan,
    samples: list[Sample],
    num_workers: int,
) -> Any:
    """The target images' activations at the plan's cut (the frozen prefix run once per image,
    un-augmented like the source rows of a one-view store), keyed and disk-cached like the
    source's, as rows the :class:`TargetSampler`'s ``(index, epoch)`` keys index."""
    from headstart.devices import compute_for
    from headstart.training.activations import activation_key, activation_rows

    idx = {UNLABELED: -1}
    pre = backbone.preprocessing
    dataset = ImageDataset(samples, idx, build_eval_transform(pre), pre.resize, seed=config.seed)
    key = activation_key(
        backbone, plan, samples, idx, "target-unlabeled", config.seed, config.augment, 1
    )
    rows, _ = activation_rows(
        backbone, plan, dataset, key, use_disk_cache=config.disk_cache, num_workers=num_workers,
        description="target activations", compute=compute_for(config),
    )  # fmt: skip
    return rows


# --- evaluation on labelled target data ---------------------------------------------------------
def target_eval_metrics(
    config: TrainConfig,
    backbone: Backbone,
    splits: DataSplits,
    *,
    fast: bool,
    num_workers: int,
) -> dict[str, Any]:
    """Metrics of the trained ``backbone`` on ``config.target_eval`` (labelled target data)."""
    from headstart.evaluation import classification_metrics, predict_logits
    from headstart.training.features import features_for

    assert config.target_eval is not None
    samples = load_source(config.target_eval, Counter(), config.strict)
    unknown = sorted({s.label for s in samples} - set(splits.classes))
    if unknown:
        raise DataError(
            f"--target-eval {config.target_eval} has class(es) not in the training data: "
            f"{', '.join(unknown)}. Training classes: {', '.join(splits.classes)}."
        )
    idx = splits.class_to_idx
    tf = build_eval_transform(backbone.preprocessing)
    dataset = ImageDataset(samples, idx, tf, backbone.preprocessing.resize, seed=config.seed)
    if fast:
        x, y, _ = features_for(
            backbone, dataset, samples, idx, split="target-eval", seed=config.seed,
            use_disk_cache=config.disk_cache, num_workers=num_workers,
        )  # fmt: skip
        backbone.eval()
        with torch.inference_mode():
            logits = backbone.head(x)
    else:
        logits, y = predict_logits(backbone, dataset, num_workers)
    return classification_metrics(logits, y, splits.classes)


def source_only_baseline(config: TrainConfig, run: RunFolder) -> dict[str, Any]:
    """Train ``config`` without adaptation into ``<run>/source-only`` (reused when it already
    finished, e.g. on resume) and return its metrics."""
    from headstart.training.fit import train

    out = run.path / "source-only"
    metrics_file = out / "metrics.json"
    if metrics_file.is_file():
        import json

        loaded: dict[str, Any] = json.loads(metrics_file.read_text(encoding="utf-8"))
        if "target_eval" in loaded:
            return loaded
    if out.exists():
        shutil.rmtree(out)  # an interrupted baseline: start it again
    log.info("training the source-only baseline in %s", out)
    base = config.replace(adapt="none", target_unlabeled=None, adapt_baseline=False, out=str(out))
    return train(base, plugins=[domain_plugin]).metrics


def target_results(
    config: TrainConfig,
    backbone: Backbone,
    splits: DataSplits,
    run: RunFolder,
    adaptation: Adaptation | None,
    fast: bool,
    num_workers: int,
) -> dict[str, Any]:
    """metrics.json blocks for ``--target-eval``: ``target_eval`` (this run's metrics there) and,
    with ``--adapt``, ``adaptation`` (settings, source-only vs adapted accuracy, gain in points)."""
    out: dict[str, Any] = {
        "target_eval": target_eval_metrics(
            config, backbone, splits, fast=fast, num_workers=num_workers
        )
    }
    if adaptation is None:
        return out
    info = adaptation.describe()
    adapted = out["target_eval"]["accuracy"]
    info["adapted_target_accuracy"] = adapted
    if not config.adapt_baseline:
        info["note"] = "source-only baseline not trained (adapt_baseline off)"
    elif config.devices > 1 or getattr(config, "num_nodes", 1) > 1:
        info["note"] = "source-only baseline not trained under DDP; run --adapt none to compare"
    else:
        baseline = source_only_baseline(config, run)["target_eval"]["accuracy"]
        info["source_only_target_accuracy"] = baseline
        info["gain_points"] = round(100 * (adapted - baseline), 2)
        info["source_only_run"] = "source-only"
    out["adaptation"] = info
    return out


# --- the training plug-in ---------------------------------------------------------------------
class DomainPlugin(TrainingPlugin):
    """``--adapt mmd|dann`` (target batches beside source batches, the adaptation step) and
    ``--target-eval`` (metrics on labelled target data, source-only baseline) as a training
    plug-in (:mod:`headstart.training.plugins`)."""

    def __init__(self) -> None:
        self.adaptation: Adaptation | None = None

    def setup(self, ctx: SetupContext) -> None:
        if ctx.config.adapt == "none":
            return
        self.adaptation = setup_adaptation(
            ctx.config, ctx.backbone, fast=ctx.cached_features, rows=ctx.rows,
            loader_kw=ctx.loader_kw, frozen_throughout=ctx.frozen_throughout,
            drop_last=ctx.drop_last, num_workers=ctx.num_workers, activations=ctx.activations,
        )  # fmt: skip

    def step(self) -> nn.Module | None:
        return self.adaptation.step if self.adaptation else None

    def fit_loader(self, train_loader: Any) -> Any:
        return self.adaptation.combine(train_loader) if self.adaptation else train_loader

    def results(self, ctx: ResultContext) -> dict[str, Any]:
        if not ctx.config.target_eval:
            return {}
        return target_results(
            ctx.config, ctx.backbone, ctx.splits, ctx.run, self.adaptation,
            ctx.cached_features, ctx.num_workers,
        )  # fmt: skip


def domain_plugin(config: TrainConfig) -> DomainPlugin | None:
    """The plug-in for ``config`` (``None`` when it neither adapts nor evaluates on target
    data)."""
    if config.adapt == "none" and not config.target_eval:
        return None
    return DomainPlugin()
