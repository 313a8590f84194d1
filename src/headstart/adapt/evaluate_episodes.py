"""``headstart fewshot-eval``: how well a backbone's features do with 1-5 examples per class."""

from __future__ import annotations

import lightning as L
import torch

from headstart.adapt.fewshot import EpisodeResult, check_episodes, episodic_accuracy
from headstart.console import setup_logging
from headstart.data import build_eval_transform, load_splits
from headstart.data.datasets import ImageDataset
from headstart.devices import resolve_compute
from headstart.models import create_backbone
from headstart.models.weights_spec import split_model_weights as split_spec
from headstart.training.features import features_for


def fewshot_eval(
    data: str,
    model: str = "torchvision:mobilenet_v2",
    *,
    ways: int = 5,
    shots: int = 5,
    queries: int = 15,
    episodes: int = 200,
    image_size: int | None = None,
    seed: int = 0,
    accelerator: str = "auto",
) -> EpisodeResult:
    """Mean N-way K-shot accuracy (95 % CI) of ``model`` (``spec`` or ``spec@weights``) on all
    labelled images of ``data``; each image's embedding is computed once (disk-cached), on
    ``accelerator`` (``auto``: the GPU when there is one).

    Example::

        r = fewshot_eval("data/", "torchvision:mobilenet_v2", ways=5, shots=1)
        print(f"{r.mean_accuracy:.1%} +- {r.ci95:.1%}")
    """
    setup_logging()
    L.seed_everything(seed, verbose=False)
    splits = load_splits(data, seed=seed)
    samples = splits.train + splits.val + splits.test
    idx = splits.class_to_idx
    counts = {c: sum(1 for s in samples if s.label == c) for c in splits.classes}
    check_episodes(counts, ways=ways, shots=shots, queries=queries, episodes=episodes)
    spec, weights = split_spec(model)
    backbone = create_backbone(spec, len(splits.classes), weights=weights, image_size=image_size)
    ds = ImageDataset(
        samples, idx, build_eval_transform(backbone.preprocessing), backbone.preprocessing.resize
    )
    compute = resolve_compute(accelerator)
    x, y, _ = features_for(backbone, ds, samples, idx, split="all", seed=seed, compute=compute)
    return episodic_accuracy(
        x, torch.as_tensor(y), ways=ways, shots=shots, queries=queries, episodes=episodes, seed=seed
    )
