"""Which head a run trains and where it starts: the one place that builds non-default heads
(cosine prototypes for few-shot, CLIP text vectors for zero-shot, label-name embeddings for the
semantic head) and fits initial weights from cached features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from headstart.config import TrainConfig
from headstart.errors import ModelError
from headstart.evaluation.probe import fit_logistic
from headstart.models.backbone import Backbone
from headstart.models.heads import CosineClassifier, classifier_layer, head_kind, make_head


def prepare_head(backbone: Backbone, config: TrainConfig, strategy: str, classes: list[str]) -> str:
    """Give ``backbone`` the head ``config`` asks for under the resolved ``strategy`` and apply
    initialisations that need no training data. Returns a description for logs and metrics."""
    kind = config.head_for(strategy)
    n = len(classes)
    if kind == "semantic":
        from headstart.models.label_text import label_embeddings

        emb = label_embeddings(classes, config.label_embeddings or "minilm", config.prompts)
        backbone.head = make_head(
            "semantic", backbone.num_features, n, dropout=config.head_dropout, label_embeddings=emb
        )
        return f"semantic head over {config.label_embeddings} embeddings of the class names"
    if head_kind(backbone.head) != kind:
        backbone.head = make_head(
            kind, backbone.num_features, n, config.head_hidden, config.head_dropout
        )
    if config.head_init == "zero-shot":
        vectors, scale = text_vectors(backbone, classes, config.prompts)
        head = backbone.head
        assert isinstance(head, CosineClassifier)
        head.set_classes(vectors, scale=scale)
        return f"zero-shot: class vectors from the text tower ({len(config.prompts)} prompt(s))"
    return "random"


def text_vectors(
    backbone: Backbone, classes: list[str], prompts: list[str]
) -> tuple[torch.Tensor, float]:
    """CLIP text embeddings of the class names for a ``hf:<clip>`` backbone."""
    from headstart.models.label_text import clip_text_embeddings, is_clip

    source, _, path = backbone.spec.partition(":")
    if source != "hf" or not is_clip(path):
        raise ModelError(
            f"--head-init zero-shot needs a model with a text tower (hf:<CLIP folder>); "
            f"{backbone.spec} has none. Use --head semantic --label-embeddings minilm instead."
        )
    vectors, scale = clip_text_embeddings(path, classes, prompts)
    if vectors.shape[1] != backbone.num_features:
        raise ModelError(
            f"{backbone.spec}: text embeddings are {vectors.shape[1]}-d but image features "
            f"{backbone.num_features}-d"
        )
    return vectors, scale


def prototypes(
    x: torch.Tensor, y: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(class prototypes (C, D), centre (D,))``: the mean of the centred, L2-normalised
    embeddings of each class, centred on the mean of all training embeddings."""
    x = x.float()
    centre = x.mean(0)
    z = F.normalize(x - centre, dim=-1)
    protos = torch.zeros(n_classes, x.shape[1])
    protos.index_add_(0, y.long(), z)
    counts = torch.bincount(y.long(), minlength=n_classes).clamp(min=1).unsqueeze(1)
    return protos / counts, centre


def init_head_from_features(
    backbone: Backbone, x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float
) -> str | None:
    """Closed-form start for the head on frozen features: class prototypes for a cosine head,
    the logistic-regression optimum for a linear head (None for other heads)."""
    head = backbone.head
    if isinstance(head, CosineClassifier):
        missing = sorted(set(range(n_classes)) - set(y.unique().tolist()))
        if missing:
            raise ModelError(
                f"no training image for class index {missing}: cannot build prototypes"
            )
        protos, centre = prototypes(x, y, n_classes)
        head.set_classes(protos, centre)
        return "prototypes (class means of centred, L2-normalised features)"
    if head_kind(head) != "linear":
        return None
    probe = fit_logistic(x, y, n_classes, l2)
    linear = classifier_layer(head)
    assert isinstance(linear, torch.nn.Linear)
    with torch.no_grad():
        linear.weight.copy_(probe.weight)
        linear.bias.copy_(probe.bias)
    return "probe (logistic regression on the cached features)"
