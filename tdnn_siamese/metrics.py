"""Verification error rates as pure numpy functions of scores (higher = more genuine).

The decision rule everywhere is *accept when score >= threshold*. FAR is the
fraction of impostor (forgery) scores accepted, FRR the fraction of genuine
scores rejected.

- :func:`far_frr`: FAR and FRR at every threshold (the ROC; the DET plot is
  the same points on normal-deviate axes, see :mod:`tdnn_siamese.plotting`);
- :func:`eer`, :func:`threshold_at_far`, :func:`frr_at_far`, :func:`auc`;
- :func:`summary`: all of these for one genuine/impostor pair of score sets
  (one *global* threshold);
- :func:`writer_specific_eer`: the mean over writers of each writer's own EER
  (a threshold per writer, chosen a posteriori), the figure most online
  signature papers print; :func:`per_writer_eer`: those EERs one by one.
"""

from __future__ import annotations

import numpy as np


def _scores(name: str, values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"no {name} scores: an error rate needs both genuine and impostor scores")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} scores contain NaN or infinity")
    return a


def far_frr(genuine, impostor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FAR and FRR at every distinct threshold, ascending, plus +inf (reject all).

    Returns ``(thresholds, far, frr)``; ``far[i]`` is the fraction of impostor
    scores ``>= thresholds[i]``, ``frr[i]`` the fraction of genuine scores below it.

    >>> t, far, frr = far_frr([0.9, 0.8], [0.1, 0.8])
    >>> t.tolist(), far.tolist(), frr.tolist()
    ([0.1, 0.8, 0.9, inf], [1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 1.0])
    """
    g, i = np.sort(_scores("genuine", genuine)), np.sort(_scores("impostor", impostor))
    thresholds = np.append(np.unique(np.concatenate([g, i])), np.inf)
    far = (len(i) - np.searchsorted(i, thresholds, side="left")) / len(i)
    frr = np.searchsorted(g, thresholds, side="left") / len(g)
    return thresholds, far, frr


def eer(genuine, impostor) -> tuple[float, float]:
    """Equal error rate and its threshold.

    FAR falls and FRR rises with the threshold; the EER is where the two
    curves cross, interpolated linearly between the two operating points
    around the crossing. The threshold returned is the observed score, on
    either side of the crossing, whose FAR and FRR are closer to each other
    (the lower one on a tie; never +inf), an operating point one can use.

    >>> eer([0.9, 0.8, 0.7], [0.1, 0.2, 0.3])   # separable
    (0.0, 0.7)
    >>> eer([0.5, 0.5], [0.5, 0.5])             # identical scores
    (0.5, 0.5)
    """
    t, far, frr = far_frr(genuine, impostor)
    diff = far - frr  # decreasing from > 0 (or 0) to < 0
    k = int(np.argmax(diff <= 0))
    if diff[k] == 0 or k == 0:
        return float((far[k] + frr[k]) / 2), float(t[k])
    a = diff[k - 1] / (diff[k - 1] - diff[k])
    j = k if abs(diff[k]) < abs(diff[k - 1]) and np.isfinite(t[k]) else k - 1
    return float(far[k - 1] + a * (far[k] - far[k - 1])), float(t[j])


def threshold_at_far(impostor, far: float) -> float:
    """The lowest threshold whose false-accept rate is at most ``far``.

    The lowest such threshold accepts the most genuine signatures. It is an
    observed impostor score, the next float above one (to reject it), or
    the lowest score when ``far`` is 1.

    >>> threshold_at_far([0.1, 0.2, 0.3, 0.4], 0.25)   # accepts only 0.4
    0.30000000000000004
    >>> threshold_at_far([0.1, 0.2, 0.3, 0.4], 0.0) > 0.4
    True
    """
    i = np.sort(_scores("impostor", impostor))
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"a false-accept rate is between 0 and 1, got {far}")
    u = np.unique(i)
    cand = np.concatenate([u[:1], np.nextafter(u, np.inf)])
    rate = (len(i) - np.searchsorted(i, cand, side="left")) / len(i)
    return float(cand[int(np.argmax(rate <= far + 1e-12))])


def frr_at_far(genuine, impostor, far: float) -> float:
    """FRR at the lowest threshold whose FAR is at most ``far``.

    >>> frr_at_far([0.5, 0.6, 0.9, 1.0], [0.1, 0.2, 0.3, 0.7], 0.25)   # threshold just above 0.3
    0.0
    >>> frr_at_far([0.5, 0.6, 0.9, 1.0], [0.1, 0.2, 0.3, 0.7], 0.0)    # threshold just above 0.7
    0.5
    """
    g = _scores("genuine", genuine)
    t = threshold_at_far(impostor, far)
    return float(np.mean(g < t))


def auc(genuine, impostor) -> float:
    """Area under the ROC: P(genuine score > impostor score), ties counting one half.

    >>> auc([0.9, 0.5], [0.5, 0.1])
    0.875
    """
    g, i = _scores("genuine", genuine), np.sort(_scores("impostor", impostor))
    below = np.searchsorted(i, g, side="left")  # impostors strictly below each genuine score
    ties = np.searchsorted(i, g, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(g) * len(i)))


def summary(genuine, impostor) -> dict[str, float | int]:
    """EER (with its threshold), FRR at FAR 1% and 10%, AUC and counts, for one global threshold."""
    e, t = eer(genuine, impostor)
    return {"eer": e, "eer_threshold": t, "frr_at_far_1": frr_at_far(genuine, impostor, 0.01),
            "frr_at_far_10": frr_at_far(genuine, impostor, 0.10), "auc": auc(genuine, impostor),
            "n_genuine": int(np.size(genuine)), "n_impostor": int(np.size(impostor))}


def rates_at(genuine, impostor, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) at a threshold fixed in advance (e.g. calibrated on validation writers)."""
    g, i = _scores("genuine", genuine), _scores("impostor", impostor)
    return float(np.mean(i >= threshold)), float(np.mean(g < threshold))


def per_writer_eer(writers, genuine_mask, scores) -> dict[str, float]:
    """Each writer's own EER (its own a posteriori threshold), for writers with both classes; sorted by name.

    ``writers``, ``genuine_mask`` (True = genuine trial, False = impostor) and
    ``scores`` are parallel arrays, one entry per trial.

    >>> per_writer_eer(["a", "a", "b", "b"], [True, False, True, False], [0.9, 0.1, 0.2, 0.8])
    {'a': 0.0, 'b': 1.0}
    """
    w = np.asarray(writers)
    m = np.asarray(genuine_mask, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    out = {}
    for name in np.unique(w):
        sel = w == name
        g, i = s[sel & m], s[sel & ~m]
        if len(g) and len(i):
            out[str(name)] = eer(g, i)[0]
    return out


def writer_specific_eer(writers, genuine_mask, scores) -> tuple[float, int]:
    """Mean over writers of each writer's EER (:func:`per_writer_eer`), and how many writers had both classes.

    Writers with no genuine or no impostor trial are left out; with none left the result is NaN.

    >>> writer_specific_eer(["a", "a", "b", "b"], [True, False, True, False], [0.9, 0.1, 0.2, 0.8])
    (0.5, 2)
    """
    per = list(per_writer_eer(writers, genuine_mask, scores).values())
    return (float(np.mean(per)) if per else float("nan")), len(per)
