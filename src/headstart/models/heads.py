"""Classifier heads placed on top of a backbone's pooled features.

* ``linear`` / ``mlp`` — the ordinary heads (a fitted logistic-regression probe can initialise the
  linear one on the cached-feature path).
* ``cosine`` — :class:`CosineClassifier`: class vectors compared with the (centred, L2-normalised)
  embedding by cosine similarity times a learned temperature. Initialised from class-mean
  prototypes it *is* a prototype classifier (few-shot); initialised from text embeddings of the
  class names it is a CLIP zero-shot classifier; either way it is an ordinary trainable head.
* ``semantic`` — :class:`SemanticHead`: a learned projection of the embedding into a fixed space
  of label-name embeddings (e.g. MiniLM sentence vectors), so classes the model never saw can be
  added by name (DeViSE-style zero-shot).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("linear", "mlp", "cosine", "semantic")


class CosineClassifier(nn.Module):
    r"""Cosine-similarity classifier with a learned temperature.

    .. math::  \mathrm{logit}_c(f) = s \cdot \frac{(f - \mu)^\top w_c}{\lVert f - \mu\rVert\,\lVert w_c\rVert}

    where :math:`\mu` is a fixed centre (the training-set mean for prototypes — SimpleShot's
    CL2N, Wang et al. 2019 — and zero for CLIP text embeddings) and :math:`s = e^{\log s}` is
    learned. With :math:`w_c` the mean of the normalised embeddings of class :math:`c` this is the
    cosine prototype classifier of Prototypical Networks (Snell et al., NeurIPS 2017); with
    :math:`w_c` the text embedding of a prompt naming class :math:`c` and :math:`\mu = 0` it is
    CLIP's zero-shot classifier (Radford et al., ICML 2021).
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 10.0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, num_classes
        self.weight = nn.Parameter(F.normalize(torch.randn(num_classes, in_features), dim=1))
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.centre: torch.Tensor
        self.register_buffer("centre", torch.zeros(in_features))

    @torch.no_grad()
    def set_classes(
        self, vectors: torch.Tensor, centre: torch.Tensor | None = None, scale: float | None = None
    ) -> None:
        """Replace the class vectors (``(C, D)``, normalised here), the centre and the scale."""
        if vectors.shape != self.weight.shape:
            raise ValueError(f"class vectors {tuple(vectors.shape)} != {tuple(self.weight.shape)}")
        self.weight.copy_(F.normalize(vectors.float(), dim=1))
        self.centre.copy_(torch.zeros(self.in_features) if centre is None else centre.float())
        if scale is not None:
            self.log_scale.fill_(math.log(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.normalize(x - self.centre, dim=-1)
        w = F.normalize(self.weight, dim=-1)
        return self.log_scale.exp() * f @ w.T


class SemanticHead(nn.Module):
    r"""Zero-shot head over label-name embeddings (DeViSE, Frome et al., NeurIPS 2013).

    .. math::  \mathrm{logit}_c(f) = s \cdot \cos\big(P f,\; e_c\big)

    :math:`e_c` is the fixed embedding of class :math:`c`'s name (a buffer: a text model such as
    MiniLM computes it, it is never trained), :math:`P` a learned linear projection and :math:`s`
    a learned temperature. Because the classes enter only through :math:`e_c`, a trained head can
    score classes it never saw: :meth:`set_label_embeddings` swaps in the names' embeddings.
    """

    def __init__(
        self, in_features: int, label_embeddings: torch.Tensor, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.embed_dim = int(label_embeddings.shape[1])
        self.out_features = int(label_embeddings.shape[0])
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_features, self.embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.label_embeddings: torch.Tensor
        self.register_buffer("label_embeddings", F.normalize(label_embeddings.float(), dim=1))

    @torch.no_grad()
    def set_label_embeddings(self, vectors: torch.Tensor) -> None:
        """Score the classes whose name embeddings are ``vectors`` (``(C', E)``) from now on."""
        if vectors.ndim != 2 or vectors.shape[1] != self.embed_dim:
            raise ValueError(f"label embeddings must be (C, {self.embed_dim})")
        self.label_embeddings = F.normalize(vectors.float(), dim=1).to(self.proj.weight.device)
        self.out_features = int(vectors.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.proj(self.dropout(x)), dim=-1)
        return self.log_scale.exp() * z @ self.label_embeddings.T


def make_head(
    kind: str,
    in_features: int,
    num_classes: int,
    hidden: int = 512,
    dropout: float | None = None,
    label_embeddings: torch.Tensor | None = None,
) -> nn.Module:
    """``linear``: [Dropout]-Linear; ``mlp``: Dropout-Linear-ReLU-Dropout-Linear; ``cosine``:
    :class:`CosineClassifier`; ``semantic``: :class:`SemanticHead` over ``label_embeddings``
    (a ``(num_classes, E)`` tensor; zeros of width ``hidden`` when rebuilding from a checkpoint).

    ``dropout`` defaults to 0 for the linear head and 0.2 for the mlp head.
    """
    if kind == "linear":
        p = 0.0 if dropout is None else dropout
        linear = nn.Linear(in_features, num_classes)
        return nn.Sequential(nn.Dropout(p), linear) if p > 0 else nn.Sequential(linear)
    if kind == "mlp":
        p = 0.2 if dropout is None else dropout
        return nn.Sequential(
            nn.Dropout(p),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p),
            nn.Linear(hidden, num_classes),
        )
    if kind == "cosine":
        return CosineClassifier(in_features, num_classes)
    if kind == "semantic":
        emb = label_embeddings if label_embeddings is not None else torch.zeros(num_classes, hidden)
        return SemanticHead(in_features, emb, 0.0 if dropout is None else dropout)
    raise ValueError(f"unknown head kind {kind!r} (one of {', '.join(HEAD_KINDS)})")


def classifier_layer(head: nn.Module) -> nn.Linear | CosineClassifier | SemanticHead:
    """The head's output layer: its last Linear, or the head itself for cosine/semantic heads.
    ``out_features`` is the class count."""
    if isinstance(head, (CosineClassifier, SemanticHead)):
        return head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the head has no Linear layer")
    return linears[-1]


def num_outputs(head: nn.Module) -> int:
    """Number of classes a head scores."""
    return int(classifier_layer(head).out_features)


#: head kinds that read stage maps instead of the pooled embedding (segmentation, detection):
#: no cached features or activations, no probe
DENSE_HEADS = ("dense", "detection")


def head_kind(head: nn.Module) -> str:
    """The :func:`make_head` kind that built ``head`` (stored with checkpoints)."""
    if isinstance(head, CosineClassifier):
        return "cosine"
    if isinstance(head, SemanticHead):
        return "semantic"
    if hasattr(head, "seg_head"):  # models/dense_heads.py: SegmentationHead
        return "dense"
    if hasattr(head, "loss_terms"):  # models/detection_heads.py: Detector
        return "detection"
    return "mlp" if sum(isinstance(m, nn.Linear) for m in head.modules()) > 1 else "linear"
