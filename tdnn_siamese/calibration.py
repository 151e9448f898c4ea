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
    w, b = fit_linear_logistic(np.asarray(genuine, np.float64)[:, None], np.asarray(impostor, np.float64)[:, None], iterations)
    return float(w[0]), b


def fit_linear_logistic(genuine: np.ndarray, impostor: np.ndarray, iterations: int = 50) -> tuple[np.ndarray, float]:
    """``(w, b)`` of ``log-odds = x @ w + b`` for score vectors x (one column per system), by Newton's method.

    ``genuine`` (n, d) and ``impostor`` (m, d) hold the d systems' scores of
    the same trials; the classes are weighted equally. With d = 2 this is
    linear logistic score fusion (Brümmer & du Preez 2006; the FoCal toolkit's
    rule). Columns are standardised before the fit, so the ridge treats
    every system alike.
    """
    g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    if g.ndim != 2 or i.ndim != 2:
        raise ValueError("scores are (trials, systems) arrays; for one system use fit_logistic")
    if not len(g) or not len(i):
        raise ValueError("calibration needs genuine and impostor scores")
    if g.shape[1] != i.shape[1]:
        raise ValueError(f"genuine scores have {g.shape[1]} columns, impostor scores {i.shape[1]}")
    if not (np.isfinite(g).all() and np.isfinite(i).all()):
        raise ValueError("calibration scores must be finite")
    s = np.concatenate([g, i])
    d = s.shape[1]
    mu, sd = s.mean(axis=0), s.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    X = np.concatenate([(s - mu) / sd, np.ones((len(s), 1))], axis=1)
    y = np.concatenate([np.ones(len(g)), np.zeros(len(i))])
    wt = np.concatenate([np.full(len(g), 0.5 / len(g)), np.full(len(i), 0.5 / len(i))])
    ridge = np.diag([RIDGE] * d + [1e-12])
    theta = np.zeros(d + 1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(X @ theta)))
        grad = X.T @ (wt * (p - y)) + ridge @ theta * (np.arange(d + 1) < d)
        hess = (X * (wt * p * (1 - p))[:, None]).T @ X + ridge
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    w = theta[:d] / sd
    return w, float(theta[d] - w @ mu)
