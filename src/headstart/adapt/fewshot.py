"""Few-shot evaluation on pretrained embeddings: N-way K-shot episodes with a prototype
classifier (Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017,
in its cosine form): each class is the mean of its L2-normalised support embeddings; a query
goes to the class whose prototype has the highest cosine similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class EpisodeResult:
    ways: int
    shots: int
    queries: int
    episodes: int
    mean_accuracy: float
    ci95: float


def episodic_accuracy(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 200,
    seed: int = 0,
    center: bool = True,
) -> EpisodeResult:
    """N-way K-shot accuracy of a prototype classifier over random episodes: each episode draws
    ``ways`` classes, ``shots`` support and ``queries`` held-out query images per class (disjoint),
    classifies the queries by cosine to the support prototypes. With ``center`` the embeddings
    are first centred on the episode's support mean (SimpleShot's CL2N, Wang et al. 2019; only
    labelled support images are used). Returns the mean and the 95 % confidence half-width
    (1.96 x standard error)."""
    g = torch.Generator().manual_seed(seed)
    classes = [int(c) for c in targets.unique() if int((targets == c).sum()) >= shots + queries]
    if len(classes) < ways:
        raise ValueError(f"only {len(classes)} classes have {shots + queries} images; need {ways}")
    raw = features.float()
    accs = []
    for _ in range(episodes):
        chosen = [classes[i] for i in torch.randperm(len(classes), generator=g)[:ways].tolist()]
        s_idx, q_idx, q_labels = [], [], []
        for j, c in enumerate(chosen):
            idx = (targets == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            s_idx.append(idx[:shots])
            q_idx.append(idx[shots : shots + queries])
            q_labels.append(torch.full((queries,), j))
        # centre on the support mean (SimpleShot's CL2N, using only the episode's labelled images)
        centre = raw[torch.cat(s_idx)].mean(0) if center else torch.zeros(raw.shape[1])
        support = torch.stack([F.normalize(raw[i] - centre, dim=-1).mean(0) for i in s_idx])
        query = F.normalize(raw[torch.cat(q_idx)] - centre, dim=-1)
        pred = (query @ F.normalize(support, dim=-1).T).argmax(1)
        accs.append(float((pred == torch.cat(q_labels)).float().mean()))
    t = torch.tensor(accs)
    ci = (
        1.96 * float(t.std(unbiased=True)) / math.sqrt(len(accs)) if len(accs) > 1 else float("nan")
    )
    return EpisodeResult(ways, shots, queries, episodes, float(t.mean()), ci)
