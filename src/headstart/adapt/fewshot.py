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

from headstart.errors import DataError


@dataclass
class EpisodeResult:
    ways: int
    shots: int
    queries: int
    episodes: int
    mean_accuracy: float
    ci95: float


def check_episodes(
    counts: dict[str, int], *, ways: int, shots: int, queries: int, episodes: int = 1
) -> None:
    """Raise :class:`DataError` (exit 2) when the data cannot fill ``ways``-way episodes of
    ``shots`` support + ``queries`` query images per class (``counts``: images per class),
    naming the numbers to lower."""
    for flag, value, least in (
        ("--ways", ways, 2), ("--shots", shots, 1), ("--queries", queries, 1),
        ("--episodes", episodes, 1),
    ):  # fmt: skip
        if value < least:
            raise DataError(f"{flag} {value}: it must be at least {least}")
    if ways > len(counts):
        raise DataError(
            f"--ways {ways} needs {ways} classes but the data has {len(counts)}: lower --ways "
            f"to at most {len(counts)}, or add classes"
        )
    need = shots + queries
    enough = sorted(c for c, n in counts.items() if n >= need)
    if len(enough) >= ways:
        return
    most = sorted(counts.values(), reverse=True)[ways - 1]  # W classes have at least this many
    fixes = []
    if most >= 2:
        k = min(shots, most - 1)
        fixes.append(
            f"lower --shots + --queries ({shots} + {queries}) to at most {most} "
            f"(e.g. --shots {k} --queries {most - k})"
        )
    if len(enough) >= 2:
        fixes.append(f"lower --ways to {len(enough)}")
    fixes.append(f"add images until {ways} classes have {need}")
    raise DataError(
        f"{ways}-way {shots}-shot episodes with {queries} queries need {ways} classes with at "
        f"least {need} images each; only {len(enough)} of the {len(counts)} classes have that "
        f"many ({ways} classes have {most} or more). To fix: {'; or '.join(fixes)}."
    )


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
    counts = {str(int(c)): int((targets == c).sum()) for c in targets.unique()}
    check_episodes(counts, ways=ways, shots=shots, queries=queries, episodes=episodes)
    classes = [int(c) for c in targets.unique() if int((targets == c).sum()) >= shots + queries]
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
