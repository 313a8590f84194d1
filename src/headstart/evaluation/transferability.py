"""Transferability scores: rank pretrained models for a data set without training them.

LogME — You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021. For features ``F`` (n x D) and, per class k, the one-hot target column
``y``, LogME models ``y = F w + e`` with prior ``w ~ N(0, 1/alpha I)`` and noise
``e ~ N(0, 1/beta I)`` and maximises the log evidence over (alpha, beta)::

    L(alpha, beta) = n/2 log beta + D/2 log alpha - n/2 log 2pi
                     - beta/2 ||F m - y||^2 - alpha/2 ||m||^2 - 1/2 log |alpha I + beta F^T F|
    m = beta (alpha I + beta F^T F)^-1 F^T y

with the fixed-point updates (MacKay's evidence framework, Algorithm 2 of the paper)::

    gamma = sum_i beta s_i / (alpha + beta s_i)      (s_i: eigenvalues of F^T F)
    alpha = gamma / ||m||^2,   beta = (n - gamma) / ||F m - y||^2

LogME is the maximised evidence divided by n, averaged over classes. Higher is better. All
quantities are computed in the SVD basis of F, so each iteration costs O(n + D).
"""

from __future__ import annotations

import numpy as np


def _evidence_for_target(
    s2: np.ndarray,
    z: np.ndarray,
    y_norm2: float,
    n: int,
    d: int,
    max_iter: int = 100,
    tol: float = 1e-8,
) -> float:
    """Maximised log evidence / n for one target; ``s2`` = squared singular values of F,
    ``z`` = U^T y (coordinates of y in F's column space), ``y_norm2`` = ||y||^2."""
    outside = max(y_norm2 - float(z @ z), 0.0)  # part of y orthogonal to F's columns
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        denom = alpha + beta * s2
        gamma = float((beta * s2 / denom).sum())
        m2 = float((beta**2 * s2 * z**2 / denom**2).sum())  # ||m||^2
        res2 = float(((alpha * z / denom) ** 2).sum()) + outside  # ||F m - y||^2
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = (n - gamma) / max(res2, 1e-12)
        done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    denom = alpha + beta * s2
    m2 = float((beta**2 * s2 * z**2 / denom**2).sum())
    res2 = float(((alpha * z / denom) ** 2).sum()) + outside
    logdet = float(np.log(denom).sum()) + (d - len(s2)) * np.log(alpha)
    evidence = (
        n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
        - beta / 2 * res2 - alpha / 2 * m2 - 0.5 * logdet
    )  # fmt: skip
    return float(evidence / n)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of ``features`` (n, D) for integer ``labels`` (n,): mean over classes of the
    maximised log evidence per sample. Higher means the features suit the labels better.

    Example::

        score = logme(train_features.numpy(), train_targets.numpy())
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max() * 1e-10 if len(s) else s > 0
    u, s2 = u[:, keep], s[keep] ** 2
    scores = []
    for k in np.unique(y):
        target = (y == k).astype(np.float64)
        scores.append(_evidence_for_target(s2, u.T @ target, float(target @ target), n, d))
    return float(np.mean(scores))


def _ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of centred ``x`` (n, D) and its shrinkage in [0, 1]."""
    n, d = x.shape
    emp = x.T @ x / n
    mu = float(np.trace(emp)) / d
    x2 = x**2
    beta_ = float((x2.T @ x2).sum())
    delta_ = float((emp**2).sum())
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * float(np.trace(emp)) + d * mu**2) / d
    shrink = 0.0 if delta <= 0 else min(max(beta, 0.0), delta) / delta
    return (1 - shrink) * emp + shrink * mu * np.eye(d), shrink


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: float | None = None) -> float:
    """H-score (Bao et al., "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning", ICIP 2019): ``tr(cov(f)^-1 cov(E[f | y]))`` — how much of the feature
    variance the class means explain. Higher is better; at most ``classes - 1``.

    With ``shrinkage=None`` cov(f) is the Ledoit-Wolf shrunk estimate (the regularised H-score
    of Ibrahim et al., ICLR 2023): with as many dimensions as samples the plain estimate is
    near-singular and every model scores ``classes - 1``. A float gives a plain ridge
    ``shrinkage x mean eigenvalue`` instead (0: the original definition).
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    f = f - f.mean(0, keepdims=True)
    if shrinkage is None:
        cov, _ = _ledoit_wolf(f)
    else:
        cov = f.T @ f / len(f)
        cov = cov + np.eye(len(cov)) * shrinkage * max(float(np.trace(cov)) / len(cov), 1e-12)
    means = np.zeros_like(f)
    for k in np.unique(y):
        means[y == k] = f[y == k].mean(0)
    cov_between = means.T @ means / len(f)
    return float(np.trace(np.linalg.solve(cov, cov_between)))
