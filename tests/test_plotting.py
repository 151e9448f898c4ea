"""FAR/FRR and DET plots: written atomically as PNGs, with a legend, or a note when there is nothing to plot."""

import warnings

import numpy as np
import pandas as pd
import pytest

from tdnn_siamese import plotting


def _scores(kinds: dict[str, int]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(k, rng.normal(1.0 if k == "genuine" else -1.0)) for k, n in kinds.items() for _ in range(n)]
    return pd.DataFrame(rows, columns=["kind", "score"])


@pytest.mark.parametrize("plot", [plotting.plot_far_frr, plotting.plot_det])
def test_plots_have_a_legend_or_say_why_they_are_empty(plot, tmp_path, monkeypatch):
    texts: list[str] = []
    real_save = plotting._save

    def save(fig, path):  # read the figure's words before it is written and closed
        ax = fig.axes[0]
        legend = ax.get_legend()
        texts.append(" | ".join([t.get_text() for t in legend.get_texts()] if legend else [t.get_text() for t in ax.texts]))
        real_save(fig, path)

    monkeypatch.setattr(plotting, "_save", save)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when legend() finds no labelled curve
        plot(_scores({"genuine": 20, "skilled": 20, "random": 10}), tmp_path / "full.png")
        plot(_scores({"genuine": 20}), tmp_path / "genuine_only.png")
        plot(_scores({"skilled": 5}), tmp_path / "forgeries_only.png")
    assert "skilled" in texts[0] and "random" in texts[0]
    assert texts[1] == texts[2] == "nothing to plot: the scores need genuine trials and forgeries"
    for name in ("full", "genuine_only", "forgeries_only"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
