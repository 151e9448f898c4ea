"""Score calibration: a monotonic map from a model's raw scores to log-odds of "genuine".

Two models (say, the folds of a cross-validation) score on different
scales: one's cosine scores may span 0.98-1.0, another's 0.2-1.0, so no
single threshold suits both, although each model alone separates well.
Linear logistic calibration (Platt scaling; Brümmer & du Preez 2006 use the
same form for speaker-verification scores) fits ``log-odds = a * score + b``
on validation scores (genuine vs impostor, classes weighted equally) and
puts every model on one scale: 0 is where genuine and impostor are equally
likely at equal priors. When the validation scores rank genuine above
impostors the map is increasing (``a > 0``), so a model's own EERs,
writer-specific or global, do not change and pooled figures across models
become meaningful; ``Verifier.log_odds`` refuses a fit with ``a <= 0``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

RIDGE = 1e-2  # on the slope of standardised scores: keeps the fit finite when validation separates perfectly


def fit_logistic(genuine: Sequence[float], impostor: Sequence[float], iterations: int = 50) -> tuple[float, float]:
    """``(a, b)`` of ``log-odds = a * score + b`` fitted by Newton's method, the two classes weighted equally.

    >>> a, b = fit_logistic([1.0, 2.0, 3.0, 2.5], [0.0, -1.0, 1.5, 0.5])
    >>> a > 0
    True
    """
    g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    if not len(g) or not len(i):
        raise ValueError("calibration needs genuine and impostor scores")
    s = np.concatenate([g, i])
    mu, sd = s.mean(), s.std()
    sd = sd if sd > 0 else 1.0
    z = (s - mu) / sd
    y = np.concatenate([np.ones(len(g)), np.zeros(len(i))])
    w = np.concatenate([np.full(len(g), 0.5 / len(g)), np.full(len(i), 0.5 / len(i))])
    X = np.stack([z, np.ones_like(z)], axis=1)
    theta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(X @ theta)))
        grad = X.T @ (w * (p - y)) + np.array([RIDGE * theta[0], 0.0])
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + np.diag([RIDGE, 1e-12])
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    a = theta[0] / sd
    return float(a), float(theta[1] - theta[0] * mu / sd)
