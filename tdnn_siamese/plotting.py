"""Plots of a score table: FAR/FRR against the threshold, and DET curves.

matplotlib is imported inside each function (the Agg backend, no display
needed), as scikit-learn does, so the rest of the package never loads it.
Figures are written atomically. DET curves (Martin et al. 1997) plot FRR
against FAR on normal-deviate (probit) axes, where Gaussian score
distributions give straight lines.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtri

from .atomic import atomic_write_bytes
from .metrics import eer, far_frr

COLOURS = {"skilled": "tab:red", "random": "tab:blue"}
DET_TICKS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8]


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _classes(scores: pd.DataFrame):
    g = scores.loc[scores.kind == "genuine", "score"].to_numpy()
    for kind in ("skilled", "random"):
        i = scores.loc[scores.kind == kind, "score"].to_numpy()
        if len(g) and len(i):
            yield kind, g, i


def _legend_or_note(ax, curves: bool, **legend: object) -> None:
    """The legend of the curves, or, when the scores hold no genuine trials or no forgeries, a note saying so
    (an empty plot with no word would pass for a plotting failure)."""
    if curves:
        ax.legend(**legend)
    else:
        ax.text(0.5, 0.5, "nothing to plot: the scores need genuine trials and forgeries",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)


def plot_far_frr(scores: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """FAR (skilled, random) and FRR against the threshold, the EER points marked."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    classes = list(_classes(scores))
    if classes:  # FRR over the whole range of scores
        g = classes[0][1]
        t, _, frr = far_frr(g, np.concatenate([i for _, _, i in classes]))
        ax.step(t[:-1], frr[:-1], where="post", color="black", label="FRR (genuine)")  # [:-1]: drop the +inf threshold
    for kind, g, i in classes:
        t, far, _ = far_frr(g, i)
        ax.step(t[:-1], far[:-1], where="post", color=COLOURS[kind], label=f"FAR ({kind} forgeries)")
        e, et = eer(g, i)
        ax.plot([et], [e], "o", color=COLOURS[kind], label=f"EER {kind}: {100 * e:.2f}% at {et:.4g}")
    ax.set_xlabel("threshold (accept when score >= threshold)")
    ax.set_ylabel("error rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend_or_note(ax, bool(classes), fontsize=8)
    ax.set_title(f"FAR and FRR {title}".strip())
    _save(fig, path)
    plt.close(fig)


def plot_det(scores: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """DET curves (FRR against FAR on normal-deviate axes) for skilled and random forgeries."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    lo, hi = ndtri(DET_TICKS[0]), ndtri(DET_TICKS[-1])
    classes = list(_classes(scores))
    for kind, g, i in classes:
        _, far, frr = far_frr(g, i)
        clip = lambda p: ndtri(np.clip(p, DET_TICKS[0] / 2, 1 - DET_TICKS[0] / 2))  # noqa: E731 - 0 and 1 are at infinity
        e, _ = eer(g, i)
        ax.plot(clip(far), clip(frr), color=COLOURS[kind], label=f"{kind} forgeries (EER {100 * e:.2f}%)")
        ax.plot([clip(e)], [clip(e)], "o", color=COLOURS[kind])
    ax.plot([lo, hi], [lo, hi], ":", color="grey", lw=0.8)
    ticks = ndtri(DET_TICKS)
    labels = [f"{100 * p:g}" for p in DET_TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("false accept rate (%)")
    ax.set_ylabel("false reject rate (%)")
    ax.grid(alpha=0.3)
    _legend_or_note(ax, bool(classes), fontsize=8, loc="upper right")
    ax.set_title(f"DET {title}".strip())
    _save(fig, path)
    plt.close(fig)
